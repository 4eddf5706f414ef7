import {
  Code,
  ConnectError,
  type Interceptor,
  type StreamRequest,
  type StreamResponse,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { Counter, collectDefaultMetrics, Gauge, Histogram, type Registry } from "prom-client";

/** The RPC code as written in logs and metric labels: "ok" or the gRPC name in snake case. */
export function rpcCodeName(code: Code | undefined): string {
  if (code === undefined) return "ok";
  return (Code[code] ?? "unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/** The code an RPC that threw error ends with (unknown for anything that is not a ConnectError). */
export function rpcErrorCode(error: unknown): Code {
  return error instanceof ConnectError ? error.code : Code.Unknown;
}

/** "<package.Service>/<Method>", the name used for spans, log lines and metric labels. */
export function rpcMethodName(req: {
  readonly service: { typeName: string };
  readonly method: { name: string };
}) {
  return `${req.service.typeName}/${req.method.name}`;
}

type AnyRequest = UnaryRequest | StreamRequest;
type AnyResponse = UnaryResponse | StreamResponse;

/**
 * Runs next(req) and calls done exactly once when the RPC has finished — for a server stream,
 * when its last message went out or it failed or was abandoned. If done returns an error, that
 * error is thrown in place of the original. bind, when given, runs each step of the handler.
 */
export async function observeRpc(
  next: (req: AnyRequest) => Promise<AnyResponse>,
  req: AnyRequest,
  done: (error: unknown) => unknown,
  bind: <T>(step: () => T) => T = (step) => step(),
): Promise<AnyResponse> {
  let res: AnyResponse;
  try {
    res = await bind(() => next(req));
  } catch (error) {
    throw done(error) ?? error;
  }
  if (!res.stream) {
    done(undefined);
    return res;
  }
  return { ...res, message: finishing(res.message, done, bind) };
}

async function* finishing<T>(
  source: AsyncIterable<T>,
  done: (error: unknown) => unknown,
  bind: <R>(step: () => R) => R,
): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      const step = await bind(() => iterator.next());
      if (step.done) break;
      yield step.value;
    }
    finished = true;
    done(undefined);
  } catch (error) {
    finished = true;
    throw done(error) ?? error;
  } finally {
    if (!finished) {
      // The consumer stopped early: the client went away or the call was cancelled.
      done(new ConnectError("stream abandoned", Code.Canceled));
      await iterator.return?.();
    }
  }
}

/** Per-method RPC metrics registered on one registry. */
export interface RpcMetrics {
  readonly registry: Registry;
  readonly service: string;
  /** rpc_requests_total{service,method,code}: finished RPCs. */
  readonly requests: Counter<"service" | "method" | "code">;
  /** rpc_errors_total{service,method,code}: finished RPCs whose code is not ok. */
  readonly errors: Counter<"service" | "method" | "code">;
  /** rpc_duration_seconds{service,method}: time from first byte in to the last message out. */
  readonly duration: Histogram<"service" | "method">;
  /** rpc_in_flight{service,method}: RPCs started and not yet finished. */
  readonly inFlight: Gauge<"service" | "method">;
}

/** Options of createRpcMetrics. */
export interface RpcMetricsOptions {
  /** Also collect the process metrics (CPU, memory, event loop, GC) on the registry. */
  readonly defaultMetrics?: boolean;
  /** Histogram buckets in seconds. */
  readonly buckets?: readonly number[];
}

/** Latency buckets from half a millisecond to thirty seconds. */
export const rpcDurationBuckets = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
] as const;

/** Registers the RPC metrics on registry (never prom-client's global one) for service. */
export function createRpcMetrics(
  registry: Registry,
  service: string,
  options: RpcMetricsOptions = {},
): RpcMetrics {
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    service,
    requests: new Counter({
      name: "rpc_requests_total",
      help: "RPCs handled, by method and final code.",
      labelNames: ["service", "method", "code"] as const,
      registers,
    }),
    errors: new Counter({
      name: "rpc_errors_total",
      help: "RPCs that ended with a code other than ok, by method and code.",
      labelNames: ["service", "method", "code"] as const,
      registers,
    }),
    duration: new Histogram({
      name: "rpc_duration_seconds",
      help: "RPC duration in seconds, from the request to the last response message.",
      labelNames: ["service", "method"] as const,
      buckets: [...(options.buckets ?? rpcDurationBuckets)],
      registers,
    }),
    inFlight: new Gauge({
      name: "rpc_in_flight",
      help: "RPCs being handled now.",
      labelNames: ["service", "method"] as const,
      registers,
    }),
  };
}

/** A server interceptor recording every RPC in metrics: count, errors by code, duration, in flight. */
export function createMetricsInterceptor(metrics: RpcMetrics): Interceptor {
  const { service } = metrics;
  // Label children are looked up once per method (and code), not per call.
  const perMethod = new Map<
    string,
    { duration: Histogram.Internal<string>; inFlight: Gauge.Internal<string> }
  >();
  const perCode = new Map<string, { requests: Counter.Internal; errors?: Counter.Internal }>();
  const methodChildren = (method: string) => {
    let children = perMethod.get(method);
    if (!children) {
      children = {
        duration: metrics.duration.labels({ service, method }),
        inFlight: metrics.inFlight.labels({ service, method }),
      };
      perMethod.set(method, children);
    }
    return children;
  };
  const codeChildren = (method: string, code: string) => {
    const key = `${method} ${code}`;
    let children = perCode.get(key);
    if (!children) {
      children = {
        requests: metrics.requests.labels({ service, method, code }),
        errors: code === "ok" ? undefined : metrics.errors.labels({ service, method, code }),
      };
      perCode.set(key, children);
    }
    return children;
  };
  return (next) => (req) => {
    const method = rpcMethodName(req);
    const children = methodChildren(method);
    const start = performance.now();
    children.inFlight.inc();
    return observeRpc(next, req, (error) => {
      children.inFlight.dec();
      children.duration.observe((performance.now() - start) / 1000);
      const counted = codeChildren(
        method,
        rpcCodeName(error === undefined ? undefined : rpcErrorCode(error)),
      );
      counted.requests.inc();
      counted.errors?.inc();
      return undefined;
    });
  };
}
