import type { SecureClientSessionOptions } from "node:http2";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import {
  type CallOptions,
  type Client,
  Code,
  type ContextValues,
  createClient,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { principalKey, requestIdKey } from "./context.js";
import { GuardedHttp2SessionManager } from "./http2-sessions.js";
import { rpcErrorCode } from "./metrics.js";
import {
  activeDeadline,
  createClientTracingInterceptor,
  createPropagatingTracer,
  requestTimeoutMs,
  type Tracer,
} from "./tracing.js";

/** Client certificate, key and trusted CA for mTLS, as PEM. */
export interface ClientTls {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  readonly ca: string | Buffer;
  /**
   * The server's SPIFFE id (e.g. "spiffe://trellis.local/ns/trellis/sa/billing"): when set, the
   * server certificate must carry it as a URI SAN, in place of the host name check.
   */
  readonly serverIdentity?: string;
}

/** How unary calls to idempotent methods are retried on Unavailable. */
export interface RetryOptions {
  /** Retries after the first attempt; 2 by default, 0 turns retries off. */
  readonly maxRetries?: number;
  /** First backoff ceiling in ms, doubled per retry (full jitter); 50 by default. */
  readonly baseDelayMs?: number;
  /** Backoff ceiling in ms; 1000 by default. */
  readonly maxDelayMs?: number;
  /** Token bucket size: each Unavailable costs a token, retries stop below half; 10 by default. */
  readonly budgetTokens?: number;
  /** Tokens earned back per successful call; 0.1 by default. */
  readonly budgetRefill?: number;
}

/** Options of createServiceClient. */
export interface ServiceClientOptions extends RetryOptions {
  /** http://host:port for h2c, https://host:port for TLS. */
  readonly baseUrl: string;
  readonly tls?: ClientTls;
  /** Deadline of calls that name none; 5000 by default. The handler's own deadline caps it. */
  readonly defaultTimeoutMs?: number;
  /** The tracer of the CLIENT spans; without one, trace ids are still propagated. */
  readonly tracer?: Tracer;
  /** More interceptors, run inside tracing and outside retries (once per call). */
  readonly interceptors?: readonly Interceptor[];
}

/** A generated-service client and the connection it owns. */
export interface ServiceClient<S extends DescService> {
  readonly client: Client<S>;
  /** Closes the HTTP/2 connection; calls in flight fail. */
  close(): void;
}

const idempotent = new Set([
  MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
  MethodOptions_IdempotencyLevel.IDEMPOTENT,
]);

/** True when a method may safely be sent twice (idempotency_level NO_SIDE_EFFECTS or IDEMPOTENT). */
export function isIdempotent(method: DescMethod): boolean {
  return idempotent.has(method.idempotency);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A client interceptor retrying unary calls of idempotent methods that failed with Unavailable,
 * with exponential backoff and full jitter, within the call's deadline and a gRPC-style retry
 * budget shared by every call through it. Other codes, methods and streams are never retried.
 */
export function createRetryInterceptor(options: RetryOptions = {}): Interceptor {
  const maxRetries = options.maxRetries ?? 2;
  const baseDelayMs = options.baseDelayMs ?? 50;
  const maxDelayMs = options.maxDelayMs ?? 1000;
  const maxTokens = options.budgetTokens ?? 10;
  const refill = options.budgetRefill ?? 0.1;
  let tokens = maxTokens;
  return (next) => async (req) => {
    if (req.stream || maxRetries <= 0 || !isIdempotent(req.method)) return next(req);
    const timeoutMs = requestTimeoutMs(req.header);
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await next(req);
        tokens = Math.min(maxTokens, tokens + refill);
        return res;
      } catch (error) {
        if (rpcErrorCode(error) !== Code.Unavailable) throw error;
        tokens = Math.max(0, tokens - 1);
        const delay = Math.random() * Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
        const outOfTime = deadline !== undefined && Date.now() + delay >= deadline;
        if (attempt >= maxRetries || tokens <= maxTokens / 2 || outOfTime || req.signal.aborted) throw error;
        await sleep(delay, req.signal).catch(() => {
          throw error;
        });
        // The transport wrote the whole budget into grpc-timeout; the server should see what is left.
        if (deadline !== undefined)
          req.header.set("grpc-timeout", `${Math.max(1, Math.ceil(deadline - Date.now()))}m`);
      }
    }
  };
}

/**
 * The options a call actually runs with: its own timeout or the default, capped by the remaining
 * deadline of the request being handled, and cancelled when that request is.
 */
export function resolveCallOptions(options: CallOptions | undefined, defaultTimeoutMs: number): CallOptions {
  const parent = activeDeadline();
  let timeoutMs = options?.timeoutMs ?? defaultTimeoutMs;
  if (parent?.deadline !== undefined) {
    const remaining = Math.max(1, Math.floor(parent.deadline - Date.now()));
    timeoutMs = timeoutMs > 0 ? Math.min(timeoutMs, remaining) : remaining;
  }
  const signals = [options?.signal, parent?.signal].filter((s): s is AbortSignal => s !== undefined);
  const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
  return { ...options, timeoutMs, ...(signal ? { signal } : {}) };
}

/** Call options sending token as the bearer credential (none when token is undefined). */
export function withBearer(token: string | undefined, options: CallOptions = {}): CallOptions {
  if (!token) return options;
  const headers = new Headers(options.headers);
  headers.set("authorization", `Bearer ${token}`);
  return { ...options, headers };
}

/** Call options forwarding the handled request's user token and request id to the next service. */
export function forwardFrom(values: ContextValues, options: CallOptions = {}): CallOptions {
  const forwarded = withBearer(values.get(principalKey)?.token, options);
  const requestId = values.get(requestIdKey);
  if (!requestId) return forwarded;
  const headers = new Headers(forwarded.headers);
  headers.set("x-request-id", requestId);
  return { ...forwarded, headers };
}

function tlsSessionOptions(tls: ClientTls): SecureClientSessionOptions {
  const { serverIdentity } = tls;
  return {
    cert: tls.cert,
    key: tls.key,
    ca: tls.ca,
    ...(serverIdentity
      ? {
          checkServerIdentity: (_host, cert) => {
            const sans = cert.subjectaltname?.split(/,\s*/) ?? [];
            return sans.includes(`URI:${serverIdentity}`)
              ? undefined
              : new Error(`server certificate does not name ${serverIdentity}`);
          },
        }
      : {}),
  };
}

/**
 * A client of service speaking gRPC over one HTTP/2 connection (mTLS when tls is given): every
 * call has a deadline, a CLIENT span whose traceparent it sends, and idempotent unary calls are
 * retried on Unavailable within a budget.
 */
export function createServiceClient<S extends DescService>(
  service: S,
  options: ServiceClientOptions,
): ServiceClient<S> {
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 5000;
  const sessionManager = new GuardedHttp2SessionManager(
    options.baseUrl,
    { idleConnectionTimeoutMs: 60_000 },
    options.tls ? tlsSessionOptions(options.tls) : {},
  );
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    sessionManager,
    defaultTimeoutMs,
    interceptors: [
      createClientTracingInterceptor(options.tracer ?? createPropagatingTracer()),
      ...(options.interceptors ?? []),
      createRetryInterceptor(options),
    ],
  });
  const base = createClient(service, transport) as unknown as Record<
    string,
    (request: unknown, callOptions?: CallOptions) => unknown
  >;
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    const call = base[method.localName];
    if (!call) continue;
    client[method.localName] = (request: unknown, callOptions?: CallOptions) =>
      call(request, resolveCallOptions(callOptions, defaultTimeoutMs));
  }
  return { client: client as Client<S>, close: () => sessionManager.abort() };
}
