import { randomUUID } from "node:crypto";
import { setMaxListeners } from "node:events";
import {
  constants,
  createSecureServer,
  createServer,
  type Http2SecureServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import type { DescFile, DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Health } from "@trellis/gen/grpc/health/v1/health_pb.js";
import { ServerReflection as ServerReflectionV1 } from "@trellis/gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "@trellis/gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { type AdminRoute, type AdminServer, startAdminServer } from "./admin.js";
import { callerServiceKey, requestIdKey } from "./context.js";
import { createGrpcUnaryFastPath, useBufferTextEncoding } from "./grpc-unary.js";
import { createHealthService, createHealthState, type HealthCheck, type HealthState } from "./health.js";
import { createPeerIdentityResolver, type NodeServerRequest } from "./identity.js";
import { createReflectionServices } from "./reflection.js";

/** How to start a service: its routes, the files it serves, its dependencies and its limits. */
export interface ServiceOptions {
  /** The service's name, for logs. */
  name: string;
  /** Interface to bind (default "0.0.0.0"). */
  host?: string;
  /** Port for Connect, gRPC and gRPC-Web; 0 picks a free one. */
  port: number;
  /** Port of the HTTP/1.1 admin server; 0 picks a free one; undefined means none. */
  adminPort?: number;
  /** Registers the service's handlers. */
  routes: (router: ConnectRouter) => void;
  /** Generated files whose services are served; reflection answers from them and their imports. */
  files: readonly DescFile[];
  interceptors?: Interceptor[];
  /** Dependency checks by name: resolve = usable, reject = down. */
  health?: Record<string, HealthCheck>;
  /** Milliseconds between dependency check rounds (default 2000). */
  healthIntervalMs?: number;
  /** Milliseconds one dependency check may take (default 1000). */
  healthTimeoutMs?: number;
  /** PEM certificate, key and CA: serve TLS and require client certificates signed by the CA. */
  tls?: { cert: string; key: string; ca: string };
  /** Without tls, take the caller's identity from Istio's x-forwarded-client-cert header. */
  trustForwardedIdentity?: boolean;
  logger: Logger;
  /** The service's own metrics registry, served on the admin port. */
  metrics: Registry;
  /** Largest request message accepted (default 4 MiB); larger gets resource_exhausted. */
  readMaxBytes?: number;
  /** How long close() lets in-flight calls run (default 10000 ms). */
  shutdownGraceMs?: number;
  /** Run in order once in-flight calls have finished (flush the relay, close pools). */
  onShutdown?: Array<() => Promise<void>>;
  /** More GET routes on the admin port, by exact path. */
  adminRoutes?: Readonly<Record<string, AdminRoute>>;
  /** Serve plain gRPC unary calls on the kit's fast path instead of connect-node (default true). */
  grpcUnaryFastPath?: boolean;
  /** Called with the procedure ("/pkg.Service/Method") of each call the fast path serves (tests, debugging). */
  onFastPathCall?: (procedure: string) => void;
}

/** A started service. */
export interface RunningService {
  readonly port: number;
  readonly adminPort?: number;
  readonly health: HealthState;
  /** Graceful shutdown; every call returns the same promise. */
  close(): Promise<void>;
}

const defaultReadMaxBytes = 4 * 1024 * 1024;

/**
 * Starts a service serving Connect, gRPC and gRPC-Web on one HTTP/2 port (h2c, or TLS with
 * client certificates), with grpc.health.v1 and gRPC reflection (v1, v1alpha) registered.
 */
export async function startService(options: ServiceOptions): Promise<RunningService> {
  const { logger, tls } = options;
  const host = options.host ?? "0.0.0.0";
  const graceMs = options.shutdownGraceMs ?? 10_000;
  const health = createHealthState({
    checks: options.health,
    intervalMs: options.healthIntervalMs,
    timeoutMs: options.healthTimeoutMs,
    logger,
  });
  const identity = {
    tls: tls !== undefined,
    trustForwardedIdentity: options.trustForwardedIdentity === true,
  };
  const callerOf = createPeerIdentityResolver(identity);
  const shutdownController = new AbortController();
  // Every in-flight call that reads its signal listens here until it ends: as many listeners as
  // calls in flight is expected, not a leak, so Node's warning past 10 is turned off.
  setMaxListeners(0, shutdownController.signal);
  const drain = createDrainTracker();

  const refuseWhileDraining: Interceptor = (next) => (req) => {
    if (drain.draining) throw new ConnectError("server is shutting down", Code.Unavailable);
    return next(req);
  };
  // Innermost, so the logging and metrics interceptors see the refusals too.
  const interceptors = [...(options.interceptors ?? []), refuseWhileDraining];
  const readMaxBytes = options.readMaxBytes ?? defaultReadMaxBytes;
  const contextValues = (req: Pick<NodeServerRequest, "headers" | "socket">) =>
    createContextValues()
      .set(callerServiceKey, callerOf(req as NodeServerRequest))
      .set(requestIdKey, requestIdOf(req));
  const onFastPathCall = options.onFastPathCall;
  useBufferTextEncoding();
  // gRPC unary calls skip connect-node's per-call machinery; the same interceptors and handlers run.
  const fastPath =
    options.grpcUnaryFastPath === false
      ? undefined
      : createGrpcUnaryFastPath({
          interceptors,
          readMaxBytes,
          shutdownSignal: shutdownController.signal,
          contextValues: (headers, stream) =>
            contextValues({ headers, socket: stream.session?.socket } as Pick<
              NodeServerRequest,
              "headers" | "socket"
            >),
          onCall(procedure) {
            onFastPathCall?.(procedure);
            return drain.enter();
          },
        });
  const handler = connectNodeAdapter({
    interceptors,
    readMaxBytes,
    shutdownSignal: shutdownController.signal,
    contextValues,
    routes(router) {
      options.routes(fastPath ? fastPath.record(router) : router);
      const own = servicesOf(router);
      for (const service of own) health.register(service.typeName);
      const reflection = createReflectionServices({
        files: [
          ...options.files,
          ...own.map((s) => s.file),
          Health.file,
          ServerReflectionV1.file,
          ServerReflectionV1Alpha.file,
        ],
        services: () => servicesOf(router).map((s) => s.typeName),
      });
      router.service(Health, createHealthService(health));
      router.service(ServerReflectionV1, reflection.v1);
      router.service(ServerReflectionV1Alpha, reflection.v1alpha);
    },
  });

  const onRequest = (req: Http2ServerRequest, res: Http2ServerResponse) => {
    drain.track(req as NodeServerRequest, res);
    handler(req, res);
  };
  const server: Http2Server | Http2SecureServer = tls
    ? createSecureServer(
        { ...tls, requestCert: true, rejectUnauthorized: true, allowHTTP1: true, minVersion: "TLSv1.2" },
        onRequest,
      )
    : createServer({}, onRequest);
  fastPath?.install(server);
  server.on("session", (session) => drain.addSession(session));
  server.on("connection", (socket: Socket) => drain.addSocket(socket));
  server.on("sessionError", (error) => logger.debug({ err: error }, "http2 session error"));

  let admin: AdminServer | undefined;
  try {
    await health.start();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    if (options.adminPort !== undefined) {
      admin = await startAdminServer({
        host,
        port: options.adminPort,
        health,
        metrics: options.metrics,
        logger,
        routes: options.adminRoutes,
      });
    }
  } catch (error) {
    // A port in use must not leave the health timer or the other listener behind.
    health.shutdown();
    if (server.listening) server.close();
    throw error;
  }
  const port = (server.address() as AddressInfo).port;
  logger.info({ service: options.name, port, adminPort: admin?.port, tls: identity.tls }, "service started");

  const shutdown = async () => {
    logger.info({ service: options.name, inFlight: drain.inFlight }, "shutting down");
    health.shutdown();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    drain.begin();
    const deadline = Date.now() + graceMs;
    let clean = await drain.idle(deadline);
    // Sessions got GOAWAY; give them until the deadline to finish closing on their own.
    clean = clean && (await settlesBy(closed, deadline));
    if (!clean) {
      logger.warn({ inFlight: drain.inFlight }, "shutdown grace expired: cancelling remaining calls");
      shutdownController.abort(new ConnectError("server is shutting down", Code.Unavailable));
      await drain.idle(Date.now() + 100);
    }
    drain.destroyAll();
    await closed;
    for (const hook of options.onShutdown ?? []) {
      try {
        await hook();
      } catch (error) {
        logger.error({ err: error }, "shutdown hook failed");
      }
    }
    await admin?.close();
    logger.info({ service: options.name }, "service stopped");
  };
  let closing: Promise<void> | undefined;
  return {
    port,
    adminPort: admin?.port,
    health,
    close() {
      closing ??= shutdown();
      return closing;
    },
  };
}

/**
 * Calls close() on the first SIGTERM or SIGINT, then exits; returns a function removing the handlers.
 * A supervised service (`supervised`, default: TRELLIS_SUPERVISED=1 in the environment, which `npm
 * start` sets) ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and the
 * supervisor turns it into one SIGTERM per service, so each drains once instead of taking the second
 * signal as "exit now".
 */
export function installSignalHandlers(
  running: Pick<RunningService, "close">,
  logger: Logger,
  {
    exit = true,
    supervised = process.env.TRELLIS_SUPERVISED === "1",
  }: { exit?: boolean; supervised?: boolean } = {},
): () => void {
  let received = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (received) {
      logger.warn({ signal }, "second signal during shutdown: exiting now");
      process.exit(1);
    }
    received = true;
    logger.info({ signal }, "signal received: shutting down");
    running.close().then(
      () => {
        if (exit) process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        if (exit) process.exit(1);
      },
    );
  };
  const onInterrupt = supervised
    ? () => logger.debug("SIGINT left to the supervisor, which sends SIGTERM")
    : onSignal;
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onInterrupt);
  return () => {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onInterrupt);
  };
}

function servicesOf(router: ConnectRouter): DescService[] {
  return [...new Set(router.handlers.map((h) => h.service))];
}

function requestIdOf(req: Pick<NodeServerRequest, "headers">): string {
  const header = req.headers["x-request-id"];
  const value = Array.isArray(header) ? header[0] : header;
  // Only a short printable id is echoed into logs; anything else gets a fresh one.
  return value && value.length <= 128 && /^[\x21-\x7e]+$/.test(value) ? value : randomUUID();
}

async function settlesBy(promise: Promise<void>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Ends an HTTP/2 stream whose response is complete while the client is still sending (an oversized
 * message, an early error): RST_STREAM NO_ERROR once END_STREAM went out, as gRPC servers do.
 * Otherwise a client that keeps the request open holds the stream, flow-control stalled, for good.
 */
function resetWhenAnswered(req: Http2ServerRequest): void {
  const stream = req.stream;
  stream.once("finish", () => {
    if (req.complete) return;
    // Node has no event for "END_STREAM sent", and an earlier RST would overtake queued DATA.
    const timer = setInterval(() => {
      if (stream.destroyed) {
        clearInterval(timer);
      } else if (stream.state.localClose) {
        clearInterval(timer);
        stream.close(constants.NGHTTP2_NO_ERROR);
        stream.destroy();
      }
    }, 10);
    timer.unref();
  });
}

/** Counts in-flight requests and holds the connections, so shutdown can wait for them and end them. */
function createDrainTracker() {
  const sessions = new Set<ServerHttp2Session>();
  const sockets = new Set<Socket>();
  // HTTP/1.1 sockets (TLS with ALPN http/1.1) and their in-flight request counts.
  const http1 = new Map<Socket, number>();
  let inFlight = 0;
  let draining = false;
  let onIdle: (() => void) | undefined;
  const release = () => {
    inFlight--;
    if (draining) {
      closeIdleHttp1();
      if (inFlight === 0) onIdle?.();
    }
  };

  const closeIdleHttp1 = () => {
    for (const [socket, busy] of http1) if (busy === 0) socket.destroy();
  };
  return {
    get draining() {
      return draining;
    },
    get inFlight() {
      return inFlight;
    },
    addSession(session: ServerHttp2Session) {
      if (draining) session.close();
      sessions.add(session);
      session.once("close", () => sessions.delete(session));
    },
    addSocket(socket: Socket) {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    },
    track(req: NodeServerRequest, res: Http2ServerResponse) {
      inFlight++;
      const socket = req.httpVersionMajor === 1 ? (req.socket as Socket) : undefined;
      if (socket) {
        if (!http1.has(socket)) socket.once("close", () => http1.delete(socket));
        http1.set(socket, (http1.get(socket) ?? 0) + 1);
        if (draining) res.setHeader("connection", "close");
      }
      if (!socket) resetWhenAnswered(req as Http2ServerRequest);
      res.once("close", () => {
        if (socket && http1.has(socket)) http1.set(socket, (http1.get(socket) ?? 1) - 1);
        release();
      });
    },
    /** A fast-path call started; call what it returns when its stream has closed. */
    enter() {
      inFlight++;
      return release;
    },
    begin() {
      draining = true;
      // GOAWAY: streams already open run on, new ones are refused.
      for (const session of sessions) session.close();
      closeIdleHttp1();
    },
    idle(deadline: number): Promise<boolean> {
      if (inFlight === 0) return Promise.resolve(true);
      return settlesBy(
        new Promise<void>((resolve) => {
          onIdle = resolve;
        }),
        deadline,
      );
    },
    destroyAll() {
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
  };
}
