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
import { createTally, type Tally } from "./rpc-tally.js";

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

const runStep = <T>(step: () => T): T => step();

/**
 * Runs next(req) and calls done exactly once when the RPC has finished — for a server stream,
 * when its last message went out or it failed or was abandoned. If done returns an error, that
 * error is thrown in place of the original. bind, when given, runs each step of the handler;
 * respond, when given, sees the response (headers still writable) as it comes back.
 */
export function observeRpc(
  next: (req: AnyRequest) => Promise<AnyResponse>,
  req: AnyRequest,
  done: (error: unknown) => unknown,
  bind: <T>(step: () => T) => T = runStep,
  respond?: (res: AnyResponse) => void,
): Promise<AnyResponse> {
  // One then() rather than async/await: every promise costs a hook call once tracing keeps context.
  // Registered inside bind, so done runs in the handler's context too (log lines get its trace).
  return bind(() => {
    let pending: Promise<AnyResponse>;
    try {
      pending = next(req);
    } catch (error) {
      return Promise.reject(done(error) ?? error);
    }
    return pending.then(
      (res) => {
        if (!res.stream) {
          done(undefined);
          respond?.(res);
          return res;
        }
        respond?.(res);
        return { ...res, message: finishing(res.message, done, bind) };
      },
      (error: unknown) => {
        throw done(error) ?? error;
      },
    );
  });
}

/**
 * Starts watching one RPC; what it returns is called once with the outcome (undefined for success)
 * and may return an error to answer with instead, as observeRpc's done.
 */
export type RpcObserver = (req: AnyRequest) => (error: unknown) => unknown;

/** The interceptor running observer around each RPC. */
export function observingInterceptor(observer: RpcObserver): Interceptor {
  return (next) => (req) => observeRpc(next, req, observer(req));
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
    bind(() => done(undefined));
  } catch (error) {
    finished = true;
    throw bind(() => done(error)) ?? error;
  } finally {
    if (!finished) {
      // The consumer stopped early: the client went away or the call was cancelled.
      bind(() => done(new ConnectError("stream abandoned", Code.Canceled)));
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
  /** The tally of one method's calls, which the metrics above include whenever they are read. */
  tally(method: string): RpcTally;
}

/** One method's calls, counted cheaply: kept in plain numbers until the registry is read. */
export interface RpcTally {
  /** A call started. */
  start(): void;
  /** A call ended with code ("ok" or a snake_case code name) after seconds. */
  finish(code: string, seconds: number): void;
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
  const buckets = [...(options.buckets ?? rpcDurationBuckets)];
  // Counting each call through prom-client hashes its label set every time; tallies count in plain
  // numbers and hand the counts over when a metric is read (collect), so readers see the same values.
  const tallies = new Map<string, Tally>();
  const publish = () => {
    for (const tally of tallies.values()) tally.publish();
  };
  const metrics: RpcMetrics = {
    registry,
    service,
    requests: new Counter({
      name: "rpc_requests_total",
      help: "RPCs handled, by method and final code.",
      labelNames: ["service", "method", "code"] as const,
      registers,
      collect: publish,
    }),
    errors: new Counter({
      name: "rpc_errors_total",
      help: "RPCs that ended with a code other than ok, by method and code.",
      labelNames: ["service", "method", "code"] as const,
      registers,
      collect: publish,
    }),
    duration: new Histogram({
      name: "rpc_duration_seconds",
      help: "RPC duration in seconds, from the request to the last response message.",
      labelNames: ["service", "method"] as const,
      buckets,
      registers,
      collect: publish,
    }),
    inFlight: new Gauge({
      name: "rpc_in_flight",
      help: "RPCs being handled now.",
      labelNames: ["service", "method"] as const,
      registers,
      collect: publish,
    }),
    tally(method) {
      let tally = tallies.get(method);
      if (!tally) {
        tally = createTally(metrics, method, buckets);
        tallies.set(method, tally);
      }
      return tally;
    },
  };
  return metrics;
}

/** A server interceptor recording every RPC in metrics: count, errors by code, duration, in flight. */
export function createMetricsInterceptor(metrics: RpcMetrics): Interceptor {
  return observingInterceptor(createMetricsObserver(metrics));
}

/** What the metrics interceptor does around each RPC, as an observer. */
export function createMetricsObserver(metrics: RpcMetrics): RpcObserver {
  // Looked up by the method's descriptor, so a call costs no string building.
  const perMethod = new Map<object, RpcTally>();
  return (req) => {
    let tally = perMethod.get(req.method);
    if (!tally) {
      tally = metrics.tally(rpcMethodName(req));
      perMethod.set(req.method, tally);
    }
    const counted = tally;
    const start = performance.now();
    counted.start();
    return (error) => {
      const code = error === undefined ? "ok" : rpcCodeName(rpcErrorCode(error));
      counted.finish(code, (performance.now() - start) / 1000);
      return undefined;
    };
  };
}
