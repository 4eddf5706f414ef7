import type { SecureClientSessionOptions } from "node:http2";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "@trellis/gen/grpc/health/v1/health_pb.js";
import { GuardedHttp2SessionManager } from "@trellis/kit/http2-sessions.js";
import type { Logger } from "pino";

/** The gateway's own certificate for mTLS to the services, and the identity each must present. */
export interface UpstreamTls {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  /** The SPIFFE id the instance's certificate must carry as a URI SAN (checked instead of the host name). */
  readonly serverIdentity: string;
}

/** One instance of an upstream service and what the balancer knows of it. */
export interface Instance {
  readonly url: string;
  /** gRPC over one HTTP/2 connection to the instance. */
  readonly transport: Transport;
  /** That connection, for streams the gateway passes through untouched. */
  readonly sessions: Http2SessionManager;
  /** Calls sent and not yet finished. */
  inFlight: number;
  /** Connection failures in a row. */
  failures: number;
  /** Ejections in a row (the cooldown doubles with each, up to 8x). */
  ejections: number;
  /** Epoch ms until which passive health keeps it out. */
  ejectedUntil: number;
  /** The last active health check's verdict (true until a check says otherwise). */
  healthy: boolean;
}

/** Options of createInstancePool. */
export interface InstancePoolOptions {
  /** The upstream's name for logs ("billing"). */
  readonly name: string;
  readonly urls: readonly string[];
  /** The gRPC service name asked in grpc.health.v1 Check. */
  readonly healthService: string;
  readonly tls?: UpstreamTls;
  /** Consecutive connection failures that eject an instance (default 3). */
  readonly ejectAfter?: number;
  /** First ejection time, ms (default 5000). */
  readonly cooldownMs?: number;
  /** Active health check period, ms; 0 turns active checks off (default 5000). */
  readonly healthIntervalMs?: number;
  readonly interceptors?: readonly Interceptor[];
  readonly logger: Logger;
  readonly now?: () => number;
}

/** The instances of one upstream service, balanced by least outstanding requests. */
export interface InstancePool {
  readonly name: string;
  readonly instances: readonly Instance[];
  /**
   * The usable instance with the fewest calls in flight, not in exclude; when none is usable,
   * the one whose ejection ends first (better a probe than a certain failure); undefined when
   * every instance is excluded.
   */
  pick(exclude?: ReadonlySet<Instance>): Instance | undefined;
  /** Records a finished call: connection failures count toward ejection, anything else resets. */
  record(instance: Instance, error: unknown): void;
  /** Runs one round of active health checks. */
  checkHealth(): Promise<void>;
  /** Instances neither ejected nor failing their health check. */
  usable(): Instance[];
  close(): void;
}

const connectionErrorCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_STREAM_CANCEL",
  "ERR_HTTP2_ERROR",
  "ERR_STREAM_PREMATURE_CLOSE",
]);
const notSentCodes = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN"]);
// A TLS handshake that fails (wrong identity, untrusted or expired certificate) sends nothing.
const tlsFailure = (code: string) =>
  code.startsWith("ERR_TLS_") ||
  code.startsWith("ERR_SSL_") ||
  code.includes("CERT") ||
  code.includes("SIGNATURE");

function nodeErrorCodes(error: unknown): string[] {
  const codes: string[] = [];
  const seen = new Set<unknown>();
  for (let e = error; e instanceof Error && !seen.has(e); e = e.cause) {
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") codes.push(code);
  }
  return codes;
}

/**
 * True when error says the instance could not be reached or dropped the call (Unavailable, or a
 * connection-level failure underneath), as opposed to an answer the service chose to give.
 */
export function isConnectionFailure(error: unknown): boolean {
  if (error instanceof ConnectError && error.code === Code.Unavailable) return true;
  if (error instanceof ConnectError && error.cause === undefined) return false;
  return nodeErrorCodes(error).some((code) => connectionErrorCodes.has(code) || tlsFailure(code));
}

/** True when error proves the request never reached the instance (safe to resend anything). */
export function wasNotSent(error: unknown): boolean {
  if (error instanceof ConnectError && /REFUSED_STREAM/.test(error.rawMessage)) return true;
  return nodeErrorCodes(error).some((code) => notSentCodes.has(code) || tlsFailure(code));
}

function tlsSessionOptions(tls: UpstreamTls): SecureClientSessionOptions {
  return {
    cert: tls.cert,
    key: tls.key,
    ca: tls.ca,
    checkServerIdentity: (_host, cert) => {
      const sans = cert.subjectaltname?.split(/,\s*/) ?? [];
      return sans.includes(`URI:${tls.serverIdentity}`)
        ? undefined
        : Object.assign(new Error(`server certificate does not name ${tls.serverIdentity}`), {
            code: "ERR_TLS_CERT_ALTNAME_INVALID",
          });
    },
  };
}

/** Creates the pool of one upstream's instances; call close() to drop its connections and timers. */
export function createInstancePool(options: InstancePoolOptions): InstancePool {
  const { name, logger } = options;
  const now = options.now ?? Date.now;
  const ejectAfter = options.ejectAfter ?? 3;
  const cooldownMs = options.cooldownMs ?? 5000;
  const managers: Http2SessionManager[] = [];
  const instances: Instance[] = options.urls.map((url) => {
    const manager = new GuardedHttp2SessionManager(
      url,
      { idleConnectionTimeoutMs: 5 * 60_000, pingIntervalMs: 15_000, pingTimeoutMs: 5_000 },
      options.tls ? tlsSessionOptions(options.tls) : {},
    );
    managers.push(manager);
    const transport = createGrpcTransport({
      baseUrl: url,
      sessionManager: manager,
      interceptors: [...(options.interceptors ?? [])],
    });
    return {
      url,
      transport,
      sessions: manager,
      inFlight: 0,
      failures: 0,
      ejections: 0,
      ejectedUntil: 0,
      healthy: true,
    };
  });
  let cursor = 0;

  const usable = (instance: Instance, at: number) => instance.healthy && instance.ejectedUntil <= at;

  const pool: InstancePool = {
    name,
    instances,
    pick(exclude) {
      const at = now();
      const count = instances.length;
      // Rotating the start spreads ties (an idle pool) over every instance.
      const start = cursor++ % count;
      let best: Instance | undefined;
      let fallback: Instance | undefined;
      for (let i = 0; i < count; i++) {
        const instance = instances[(start + i) % count] as Instance;
        if (exclude?.has(instance)) continue;
        if (usable(instance, at)) {
          if (!best || instance.inFlight < best.inFlight) best = instance;
        } else if (!fallback || instance.ejectedUntil < fallback.ejectedUntil) {
          fallback = instance;
        }
      }
      return best ?? fallback;
    },
    record(instance, error) {
      if (error === undefined || !isConnectionFailure(error)) {
        if (instance.failures > 0 || instance.ejections > 0) {
          logger.info({ upstream: name, instance: instance.url }, "upstream instance recovered");
        }
        instance.failures = 0;
        instance.ejections = 0;
        return;
      }
      instance.failures++;
      if (instance.failures >= ejectAfter) {
        const at = now();
        if (instance.ejectedUntil > at) return;
        instance.ejections++;
        const backoff = cooldownMs * 2 ** Math.min(3, instance.ejections - 1);
        instance.ejectedUntil = at + backoff;
        logger.warn(
          { upstream: name, instance: instance.url, failures: instance.failures, cooldown_ms: backoff },
          "upstream instance ejected",
        );
      }
    },
    async checkHealth() {
      await Promise.all(
        instances.map(async (instance) => {
          const healthy = await probe(instance);
          if (healthy !== instance.healthy) {
            logger.warn({ upstream: name, instance: instance.url, healthy }, "upstream health changed");
          }
          instance.healthy = healthy;
        }),
      );
    },
    usable() {
      const at = now();
      return instances.filter((i) => usable(i, at));
    },
    close() {
      clearInterval(timer);
      for (const manager of managers) manager.abort();
    },
  };

  const probe = async (instance: Instance): Promise<boolean> => {
    try {
      const res = await createClient(Health, instance.transport).check(
        { service: options.healthService },
        { timeoutMs: 2000 },
      );
      return res.status === HealthCheckResponse_ServingStatus.SERVING;
    } catch (error) {
      // An instance without the health service is judged by its calls alone.
      return error instanceof ConnectError && error.code === Code.Unimplemented;
    }
  };

  const interval = options.healthIntervalMs ?? 5000;
  const timer =
    interval > 0
      ? setInterval(() => {
          pool.checkHealth().catch((error: unknown) => logger.error({ err: error }, "health round failed"));
        }, interval).unref()
      : undefined;
  return pool;
}
