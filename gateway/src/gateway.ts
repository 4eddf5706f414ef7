import { randomUUID } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, createContextValues } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createAccessInterceptor } from "@trellis/kit/access.js";
import { type AdminServer, startAdminServer } from "@trellis/kit/admin.js";
import { requestIdKey } from "@trellis/kit/context.js";
import { createHealthState, type HealthState } from "@trellis/kit/health.js";
import { createLoggingInterceptor } from "@trellis/kit/logger.js";
import { createMetricsInterceptor, createRpcMetrics } from "@trellis/kit/metrics.js";
import { connectNats } from "@trellis/kit/nats.js";
import { createCachingVerifier } from "@trellis/kit/token-cache.js";
import { createTokenVerifier, type TokenVerifier } from "@trellis/kit/tokens.js";
import {
  createClientTracingInterceptor,
  observabilityInterceptors,
  type Tracer,
} from "@trellis/kit/tracing.js";
import type { NatsConnection } from "nats";
import type { Logger } from "pino";
import { Registry } from "prom-client";
import type { InstancePool } from "./balancer.js";
import type { GatewayConfig, UpstreamName } from "./config.js";
import { clientAddressKey, forwardedForKey } from "./context.js";
import { createCors } from "./cors.js";
import { createEndpoints } from "./endpoints.js";
import { registerForwarding } from "./forward.js";
import { createJwksSource } from "./jwks.js";
import { type DualListener, listenDual } from "./listener.js";
import { registerGatewayMetrics } from "./metrics.js";
import { createRpcObserver } from "./observe.js";
import { createPassThrough } from "./passthrough.js";
import { createPools } from "./pools.js";
import { createRateLimiter, createRateLimitInterceptors, type RateLimiter } from "./rate-limit.js";
import { restRoutes } from "./rest.js";
import { createRestHandler, type NodeRequest, writeJsonError } from "./rest-http.js";
import {
  createRevocationList,
  type RevocationFeed,
  type RevocationList,
  startRevocationFeed,
} from "./revocations.js";
import { routedServices } from "./routes.js";
import { createStaticFiles } from "./static.js";

/** What the gateway runs with; everything but config and logger has a default. */
export interface GatewayOptions {
  readonly config: GatewayConfig;
  readonly logger: Logger;
  /** Registry served on the admin port (default: a new one). */
  readonly metrics?: Registry;
  /** A recording tracer (OTLP configured): the gateway's own spans; without one, traceparent passes through. */
  readonly tracer?: Tracer;
  /** The gateway's certificate, key and CA for mTLS to the services (PEM). */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string };
  /** Clock of the rate limiter, ms (tests inject one). */
  readonly now?: () => number;
}

/** A running gateway. */
export interface Gateway {
  readonly port: number;
  readonly adminPort?: number;
  readonly pools: Readonly<Record<UpstreamName, InstancePool>>;
  readonly limiter: RateLimiter;
  readonly revocations: RevocationList;
  readonly health: HealthState;
  /** Graceful stop; every call returns the same promise. */
  close(): Promise<void>;
}

function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function requestIdFrom(value: string | undefined): string {
  // Only a short printable id is trusted into logs and upstream headers.
  return value && value.length <= 128 && /^[\x21-\x7e]+$/.test(value) ? value : randomUUID();
}

/** Starts the gateway: the public port (HTTP/1.1 + h2c), the admin port, pools, and the revocation feed. */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { config, logger } = options;
  const registry = options.metrics ?? new Registry();
  const services = routedServices();
  const tracer = options.tracer;
  const pools = createPools(
    config,
    logger,
    tracer ? [createClientTracingInterceptor(tracer)] : [],
    options.tls,
  );

  const revocations = createRevocationList();
  const jwks = createJwksSource(pools.auth, config.JWKS_CACHE);
  const isRevoked = (sessionId: string) => revocations.isRevoked(sessionId);
  const signatureVerifier = createTokenVerifier({
    // Without JWKS_URL the keys come from AuthService.GetJwks; the URL is then only a cache key.
    ...(config.JWKS_URL
      ? { jwksUrl: config.JWKS_URL }
      : { jwksUrl: "http://auth.internal/jwks", fetch: jwks.fetch }),
    issuer: config.JWT_ISSUER,
    audience: config.JWT_AUDIENCE,
    cooldownMs: config.JWKS_COOLDOWN,
    isRevoked,
  });
  const verifier: TokenVerifier =
    config.TOKEN_CACHE > 0
      ? createCachingVerifier(signatureVerifier, { ttlMs: config.TOKEN_CACHE, isRevoked })
      : signatureVerifier;
  const limiter = createRateLimiter({
    limits: config.RATE_LIMITS,
    ...(options.now ? { now: options.now } : {}),
  });
  const counters = registerGatewayMetrics(registry, { pools, limiter, revocations });
  const limits = createRateLimitInterceptors(limiter, (scope, method) =>
    counters.limited.inc({ scope, method }),
  );

  const requestIds = new WeakMap<object, string>();
  const contextFor = (req: NodeRequest) => {
    const peer = req.socket?.remoteAddress ?? "";
    const incoming = firstHeader(req.headers["x-forwarded-for"]);
    const first = incoming?.split(",")[0]?.trim();
    return createContextValues()
      .set(requestIdKey, requestIds.get(req) ?? requestIdFrom(firstHeader(req.headers["x-request-id"])))
      .set(clientAddressKey, config.TRUST_PROXY && first ? first : peer)
      .set(forwardedForKey, incoming ? `${incoming}, ${peer}` : peer);
  };

  const rpcMetrics = createRpcMetrics(registry, "gateway");
  const handlers = new Map<DescMethod, UniversalHandler>();
  const connectHandler = connectNodeAdapter({
    routes(router) {
      registerForwarding(router, services, pools, {
        defaultTimeoutMs: config.DEFAULT_TIMEOUT,
        maxTimeoutMs: config.MAX_TIMEOUT,
        onRetry: (pool, method) => counters.retries.inc({ upstream: pool, method: method.name }),
        passTraceContext: tracer === undefined,
      });
      for (const handler of router.handlers) handlers.set(handler.method, handler);
    },
    interceptors: [
      // Without a recording tracer, no span context (and no AsyncLocalStorage, which taxes every
      // promise) is kept: the caller's traceparent passes through instead.
      ...(tracer
        ? observabilityInterceptors({ logger, metrics: rpcMetrics, tracer })
        : [createMetricsInterceptor(rpcMetrics), createLoggingInterceptor(logger)]),
      limits.byAddress,
      createAccessInterceptor({ verifier }),
      limits.byPrincipal,
    ],
    readMaxBytes: config.MAX_BODY_BYTES,
    contextValues: contextFor,
  });
  const passThrough = createPassThrough({
    services,
    pools,
    verifier,
    limiter,
    onLimited: (scope, method) => counters.limited.inc({ scope, method }),
    onRetry: (pool, method) => counters.retries.inc({ upstream: pool, method: method.name }),
    maxBodyBytes: config.MAX_BODY_BYTES,
    defaultTimeoutMs: config.DEFAULT_TIMEOUT,
    maxTimeoutMs: config.MAX_TIMEOUT,
    observe: createRpcObserver({ logger, metrics: rpcMetrics, tracer }),
  });
  const routes = restRoutes(services.flatMap((s) => s.methods));
  const rest = createRestHandler({
    routes,
    handlerFor: (method) => handlers.get(method),
    maxBodyBytes: config.MAX_BODY_BYTES,
    contextValues: contextFor,
  });

  let feed: RevocationFeed | undefined;
  let nats: NatsConnection | undefined;
  let stopped = false;
  const health = createHealthState({
    checks: config.REVOCATIONS
      ? {
          revocations: async () => {
            if (!feed?.attached) throw new Error("session revocation feed not attached");
          },
        }
      : {},
    intervalMs: 1000,
    logger,
  });
  const endpoints = createEndpoints({ services, routes, health, jwks, logger });
  const staticFiles = config.WEB_DIR ? createStaticFiles(config.WEB_DIR) : undefined;
  const cors = createCors(config.CORS_ORIGINS);

  let listener: DualListener | undefined;
  listener = await listenDual({
    host: config.HOST,
    port: config.GATEWAY_PORT,
    logger,
    handler(req, res) {
      const id = requestIdFrom(firstHeader(req.headers["x-request-id"]));
      requestIds.set(req, id);
      res.setHeader("x-request-id", id);
      if (listener?.closing && req.httpVersionMajor === 1) res.setHeader("connection", "close");
      const decision = cors(req.method, req.headers);
      if (decision) {
        for (const [name, value] of Object.entries(decision.headers)) res.setHeader(name, value);
        if (decision.preflightStatus !== undefined) {
          res.writeHead(decision.preflightStatus);
          res.end();
          return;
        }
      }
      const url = req.url ?? "/";
      const q = url.indexOf("?");
      const path = q < 0 ? url : url.slice(0, q);
      if (path.startsWith("/trellis.")) {
        if (!passThrough(req, res, path, contextFor(req))) connectHandler(req, res);
        return;
      }
      if (endpoints(req, res, path)) return;
      rest(req, res, path, q < 0 ? "" : url.slice(q + 1))
        .then(async (served) => served || (staticFiles !== undefined && (await staticFiles(req, res, path))))
        .then(
          (served) => {
            if (!served) writeJsonError(res, 404, Code.NotFound, "no route");
          },
          (error: unknown) => {
            logger.error({ err: error, path }, "REST request failed");
            if (!res.headersSent) writeJsonError(res, 500, Code.Internal, "internal error");
            else res.end();
          },
        );
    },
  });

  if (config.REVOCATIONS) {
    connectNats(config.NATS_URL, { name: "gateway" }).then(
      (nc) => {
        nats = nc;
        if (stopped) return void nc.close();
        feed = startRevocationFeed({
          nats: nc,
          stream: config.REVOCATIONS_STREAM,
          list: revocations,
          logger,
        });
      },
      (error: unknown) =>
        logger.error({ err: error }, "cannot connect to NATS: session revocations not followed"),
    );
  }
  await health.start();
  let admin: AdminServer | undefined;
  if (config.GATEWAY_ADMIN_PORT !== undefined) {
    admin = await startAdminServer({
      host: config.HOST,
      port: config.GATEWAY_ADMIN_PORT,
      health,
      metrics: registry,
      logger,
    });
  }
  const sweeper = setInterval(() => limiter.sweep(), 60_000).unref();
  logger.info({ port: listener.port, adminPort: admin?.port }, "gateway started");

  let closing: Promise<void> | undefined;
  return {
    port: listener.port,
    adminPort: admin?.port,
    pools,
    limiter,
    revocations,
    health,
    close() {
      closing ??= (async () => {
        stopped = true;
        health.shutdown();
        clearInterval(sweeper);
        await listener.close(config.SHUTDOWN_GRACE_MS);
        await feed?.stop();
        await nats?.drain().catch(() => nats?.close());
        for (const pool of Object.values(pools)) pool.close();
        await admin?.close();
        logger.info("gateway stopped");
      })();
      return closing;
    },
  };
}
