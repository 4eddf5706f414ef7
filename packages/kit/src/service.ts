import { readFileSync } from "node:fs";
import type { DescFile } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import type { NatsConnection } from "nats";
import { Gauge, Registry } from "prom-client";
import { createAccessInterceptor } from "./access.js";
import type { AdminRoute } from "./admin.js";
import {
  ConfigError,
  type ConfigSource,
  type KitConfig,
  kitConfigSchema,
  loadConfig,
  tlsFiles,
} from "./config.js";
import { createDb, type Db, postgresCheck } from "./db.js";
import type { HealthCheck } from "./health.js";
import { createLogger, type Logger } from "./logger.js";
import { createRpcMetrics } from "./metrics.js";
import { KIT_MIGRATIONS_DIR, migrate } from "./migrate.js";
import { connectNats, natsCheck, type StreamSpec } from "./nats.js";
import { type Relay, startRelay } from "./relay.js";
import { installSignalHandlers, type RunningService, startService } from "./server.js";
import { createCachingVerifier } from "./token-cache.js";
import { createTokenVerifier, type TokenVerifier } from "./tokens.js";
import { createTracing, injectTraceHeaders, observabilityInterceptors, type Tracer } from "./tracing.js";
import { createValidationInterceptor } from "./validation.js";

/** What a service is: its name, contracts, store and the factory of its handlers. */
export interface ServiceDefinition {
  /** Service account name, e.g. "billing": logs, metrics, the mesh identity, ce-source. */
  readonly name: string;
  /** Port when PORT is unset (the admin port is this + 1000). */
  readonly defaultPort: number;
  /** Generated files whose services it serves (reflection answers from them). */
  readonly files: readonly DescFile[];
  /** The service's SQL migrations; when set, DATABASE_URL is required and migrations run at start. */
  readonly migrationsDir?: string;
  /** The JetStream stream its outbox relay publishes to; when set, the relay runs. */
  readonly stream?: StreamSpec;
  /** Whether the service needs NATS (implied by stream). */
  readonly nats?: boolean;
  /** Builds the service's handlers from its dependencies. */
  create(deps: ServiceDeps): Promise<ServiceParts>;
}

/** Everything a service's factory gets: connections, config and the process's tools. */
export interface ServiceDeps {
  readonly serviceName: string;
  /** The environment the service was started with; the service's config.ts parses it. */
  readonly env: ConfigSource;
  readonly config: KitConfig;
  readonly logger: Logger;
  readonly tracer: Tracer;
  readonly metrics: Registry;
  readonly sql?: Db;
  readonly nats?: NatsConnection;
  /** Verifies access tokens against JWKS_URL (a service may replace it through ServiceParts.tokens). */
  readonly tokens: TokenVerifier;
  /** The service's own certificate, key and CA, for mTLS calls to other services. */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string };
  /** Adds traceparent to event headers (pass to enqueue). */
  readonly injectTrace: (headers: Record<string, string>) => void;
}

/** What a service's factory returns. */
export interface ServiceParts {
  /** Registers its handlers. */
  readonly routes: (router: ConnectRouter) => void;
  /** More dependency checks for grpc.health.v1 and /readyz. */
  readonly health?: Record<string, HealthCheck>;
  /** Replaces deps.tokens in the access interceptor (auth verifies its own tokens from its DB). */
  readonly tokens?: TokenVerifier;
  /** More GET routes on the admin port (auth serves /.well-known/jwks.json there). */
  readonly adminRoutes?: Readonly<Record<string, AdminRoute>>;
  /** More server interceptors, innermost (after access and validation). */
  readonly interceptors?: Interceptor[];
  /** Starts background work (consumers, schedulers) once the server listens. */
  start?(): Promise<void>;
  /** Stops background work; runs after in-flight calls finish, before pools close. */
  stop?(): Promise<void>;
}

/** A running service with its dependencies, for tests and the launcher. */
export interface ServiceInstance extends RunningService {
  readonly deps: ServiceDeps;
  readonly relay?: Relay;
}

/** Overrides for startServiceInstance, mostly for tests. */
export interface InstanceOptions {
  /** Where log lines go (default stdout). */
  readonly logDestination?: Parameters<typeof createLogger>[0]["destination"];
}

/** Starts a service from its definition and an environment: config, stores, migrations, relay, server. */
export async function startServiceInstance(
  definition: ServiceDefinition,
  source: ConfigSource,
  options: InstanceOptions = {},
): Promise<ServiceInstance> {
  const config = loadConfig(kitConfigSchema(definition.defaultPort), source);
  const name = definition.name;
  if (definition.migrationsDir && !config.DATABASE_URL) {
    throw new ConfigError([{ variable: "DATABASE_URL", problem: "missing" }]);
  }
  const logger = createLogger({
    service: name,
    level: config.LOG_LEVEL,
    destination: options.logDestination,
  });
  const tracing = createTracing({ service: name, otlpEndpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT });
  const metrics = new Registry();
  const files = tlsFiles(config);
  const tls = files && {
    cert: readFileSync(files.cert, "utf8"),
    key: readFileSync(files.key, "utf8"),
    ca: readFileSync(files.ca, "utf8"),
  };

  const cleanup: Array<() => Promise<void>> = [];
  try {
    let sql: Db | undefined;
    if (config.DATABASE_URL) {
      sql = createDb(config.DATABASE_URL, { service: name, max: config.DATABASE_POOL_MAX });
      const db = sql;
      cleanup.push(() => db.end({ timeout: 5 }));
      // The kit's tables (outbox, inbox) come first, then the service's own.
      if (definition.migrationsDir)
        await migrate(sql, { dir: definition.migrationsDir, service: name, logger });
      else await migrate(sql, { dir: KIT_MIGRATIONS_DIR, service: "kit", logger, kit: false });
    }
    let nats: NatsConnection | undefined;
    if (definition.stream || definition.nats) {
      nats = await connectNats(config.NATS_URL, { name });
      const nc = nats;
      cleanup.push(() => nc.drain().catch(() => nc.close()));
    }
    const deps: ServiceDeps = {
      serviceName: name,
      env: source,
      config,
      logger,
      tracer: tracing.tracer,
      metrics,
      sql,
      nats,
      tokens: config.JWKS_URL
        ? cachingVerifier(
            createTokenVerifier({
              jwksUrl: config.JWKS_URL,
              issuer: config.JWT_ISSUER,
              audience: config.JWT_AUDIENCE,
            }),
            config.TOKEN_CACHE,
          )
        : noJwksVerifier,
      tls,
      injectTrace: (headers) => {
        injectTraceHeaders(headers);
      },
    };
    const parts = await definition.create(deps);

    let relay: Relay | undefined;
    if (definition.stream && sql && nats) {
      // LISTEN holds a connection of its own: not with a pool of one.
      const listen = config.DATABASE_POOL_MAX > 1;
      relay = await startRelay({ sql, nats, service: name, logger, stream: definition.stream, listen });
      registerOutboxMetrics(metrics, relay);
    }
    const health: Record<string, HealthCheck> = { ...parts.health };
    if (sql) health.postgres = postgresCheck(sql);
    if (nats) health.nats = natsCheck(nats);

    const running = await startService({
      name,
      host: config.HOST,
      port: config.PORT,
      adminPort: config.ADMIN_PORT,
      routes: parts.routes,
      adminRoutes: parts.adminRoutes,
      files: definition.files,
      interceptors: [
        ...observabilityInterceptors({
          logger,
          metrics: createRpcMetrics(metrics, name),
          tracer: tracing.tracer,
        }),
        createAccessInterceptor({ verifier: parts.tokens ?? deps.tokens }),
        createValidationInterceptor(),
        ...(parts.interceptors ?? []),
      ],
      health,
      tls,
      trustForwardedIdentity: config.TRUST_FORWARDED_IDENTITY,
      logger,
      metrics,
      shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
      onShutdown: [
        async () => parts.stop?.(),
        async () => {
          if (!relay) return;
          await relay
            .flush()
            .catch((error) => logger.warn({ err: error }, "outbox not fully flushed at shutdown"));
          await relay.stop();
        },
        ...cleanup.reverse(),
        () => tracing.shutdown(),
      ],
    });
    await parts.start?.();
    return { ...running, close: running.close, deps, relay };
  } catch (error) {
    for (const step of cleanup.reverse()) await step().catch(() => {});
    throw error;
  }
}

/** main() of a service: starts it from process.env, stops it cleanly on SIGTERM/SIGINT, exits 1 on bad config. */
export async function runService(definition: ServiceDefinition, source: ConfigSource): Promise<void> {
  try {
    const instance = await startServiceInstance(definition, source);
    installSignalHandlers(instance, instance.deps.logger);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${definition.name}: bad configuration: ${error.message}\n`);
    } else {
      process.stderr.write(
        `${definition.name}: failed to start: ${error instanceof Error ? error.stack : error}\n`,
      );
    }
    process.exit(1);
  }
}

/** Options of startTestService: the stores to use and any extra environment. */
export interface TestServiceOptions {
  readonly databaseUrl?: string;
  readonly natsUrl?: string;
  readonly jwksUrl?: string;
  readonly env?: ConfigSource;
}

/** Starts a service for a test on 127.0.0.1 with ephemeral ports and silent logs (TEST_LOG_LEVEL to see them). */
export async function startTestService(
  definition: ServiceDefinition,
  options: TestServiceOptions = {},
): Promise<ServiceInstance & { readonly baseUrl: string }> {
  const env: Record<string, string | undefined> = {
    HOST: "127.0.0.1",
    PORT: "0",
    ADMIN_PORT: "0",
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    SHUTDOWN_GRACE_MS: "2000",
    DATABASE_URL: options.databaseUrl,
    NATS_URL: options.natsUrl ?? process.env.TEST_NATS_URL,
    JWKS_URL: options.jwksUrl,
    ...options.env,
  };
  const instance = await startServiceInstance(definition, env);
  return { ...instance, baseUrl: `http://127.0.0.1:${instance.port}` };
}

/** verifier behind a cache of verified tokens kept ttlMs (never past their exp); 0 turns it off. */
function cachingVerifier(verifier: TokenVerifier, ttlMs: number): TokenVerifier {
  return ttlMs > 0 ? createCachingVerifier(verifier, { ttlMs }) : verifier;
}

const noJwksVerifier: TokenVerifier = {
  async verify() {
    throw new ConnectError(
      "access tokens cannot be verified: JWKS_URL is not configured",
      Code.Unauthenticated,
    );
  },
};

// Outbox backlog as gauges, read when Prometheus scrapes.
function registerOutboxMetrics(registry: Registry, relay: Relay): void {
  let last: Promise<{ pending: number; oldestAgeMs: number }> | undefined;
  const read = () => {
    last ??= relay.lag().finally(() => {
      last = undefined;
    });
    return last;
  };
  new Gauge({
    name: "outbox_pending_events",
    help: "Events written to the outbox and not yet published to NATS.",
    registers: [registry],
    async collect() {
      this.set((await read()).pending);
    },
  });
  new Gauge({
    name: "outbox_oldest_pending_seconds",
    help: "Age of the oldest unpublished outbox event.",
    registers: [registry],
    async collect() {
      this.set((await read()).oldestAgeMs / 1000);
    },
  });
}
