import { randomFillSync } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  type Context,
  context,
  createContextKey,
  isSpanContextValid,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  TraceFlags,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  type Sampler,
  type SpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { createLoggingObserver, type Logger } from "./logger.js";
import {
  createMetricsObserver,
  observeRpc,
  type RpcMetrics,
  type RpcObserver,
  rpcErrorCode,
  rpcMethodName,
} from "./metrics.js";

export type { Tracer } from "@opentelemetry/api";

const propagator = new W3CTraceContextPropagator();
const probeKey = createContextKey("trellis context manager probe");
const deadlineKey = createContextKey("trellis request deadline");

/**
 * Makes sure an AsyncLocalStorage context manager is installed. OpenTelemetry's context manager
 * is process-global by design; this installs one only when the active one does not carry values.
 */
export function ensureContextManager(): void {
  if (context.with(ROOT_CONTEXT.setValue(probeKey, true), () => context.active().getValue(probeKey))) return;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
}

/** Tracing for one service: its tracer and the way to flush and stop its exporter. */
export interface Tracing {
  readonly tracer: Tracer;
  /** False when spans go nowhere: ids are still made and propagated, nothing is recorded. */
  readonly recording: boolean;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

/** Options of createTracing. */
export interface TracingOptions {
  /** service.name of the spans. */
  readonly service: string;
  /** OTLP/HTTP base endpoint (OTEL_EXPORTER_OTLP_ENDPOINT); spans go to <endpoint>/v1/traces. */
  readonly otlpEndpoint?: string;
  /** More span processors (tests pass a SimpleSpanProcessor over an InMemorySpanExporter). */
  readonly spanProcessors?: readonly SpanProcessor[];
  /** Sampler of the provider; parent-based always-on by default. */
  readonly sampler?: Sampler;
}

/**
 * A tracer from a private TracerProvider (never the global one) exporting over OTLP/HTTP in
 * batches when an endpoint is given; with nowhere to send spans, a tracer that only makes and
 * propagates ids, so untraced services pay next to nothing.
 */
export function createTracing(options: TracingOptions): Tracing {
  ensureContextManager();
  const processors = [...(options.spanProcessors ?? [])];
  if (options.otlpEndpoint) {
    const url = `${options.otlpEndpoint.replace(/\/+$/, "")}/v1/traces`;
    processors.push(new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url }) }));
  }
  if (processors.length === 0) {
    return {
      tracer: createPropagatingTracer(),
      recording: false,
      forceFlush: async () => {},
      shutdown: async () => {},
    };
  }
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": options.service }),
    spanProcessors: processors,
    ...(options.sampler ? { sampler: options.sampler } : {}),
  });
  return {
    tracer: provider.getTracer("@trellis/kit"),
    recording: true,
    forceFlush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

/** A tracer whose spans record nothing but carry real ids: the parent's trace, a new span id. */
export function createPropagatingTracer(): Tracer {
  const randomId = createIdSource();
  const startSpan = (_name: string, options?: SpanOptions, ctx: Context = context.active()): Span => {
    const parent = options?.root ? undefined : trace.getSpanContext(ctx);
    const valid = parent !== undefined && isSpanContextValid(parent);
    return trace.wrapSpanContext({
      traceId: valid ? parent.traceId : randomId(16),
      spanId: randomId(8),
      traceFlags: valid ? parent.traceFlags : TraceFlags.NONE,
      ...(valid && parent.traceState ? { traceState: parent.traceState } : {}),
    });
  };
  // startActiveSpan's overloads: (name, fn), (name, options, fn), (name, options, context, fn).
  const startActiveSpan = (name: string, ...rest: unknown[]) => {
    const fn = rest.pop() as (span: Span) => unknown;
    const [options, ctx = context.active()] = rest as [SpanOptions | undefined, Context | undefined];
    const span = startSpan(name, options, ctx);
    return context.with(trace.setSpan(ctx, span), fn, undefined, span);
  };
  return { startSpan, startActiveSpan } as Tracer;
}

// Random span and trace ids as hex, cut from a pooled block of crypto randomness (cheaper per id
// than OpenTelemetry's generator, which fills a buffer from Math.random for each); all zeros is invalid.
function createIdSource(): (bytes: number) => string {
  const pool = Buffer.alloc(4096);
  let offset = pool.length;
  return (bytes) => {
    for (;;) {
      if (offset + bytes > pool.length) {
        randomFillSync(pool);
        offset = 0;
      }
      const id = pool.toString("hex", offset, offset + bytes);
      offset += bytes;
      if (!allZeros.test(id)) return id;
    }
  };
}
const allZeros = /^0+$/;

/** Anything headers can be read from and written to: fetch Headers, NATS MsgHdrs, or a plain record. */
export type TraceCarrier =
  | Record<string, string | undefined>
  | { get(key: string): string | null | undefined; set(key: string, value: string): void };

function isHeaderLike(
  carrier: TraceCarrier,
): carrier is Exclude<TraceCarrier, Record<string, string | undefined>> {
  return typeof (carrier as { get?: unknown }).get === "function";
}

const carrierGetter: TextMapGetter<TraceCarrier> = {
  // NATS answers "" for a missing header.
  get: (carrier, key) => (isHeaderLike(carrier) ? carrier.get(key) || undefined : carrier[key]),
  keys: (carrier) => (isHeaderLike(carrier) ? [] : Object.keys(carrier)),
};

const carrierSetter: TextMapSetter<TraceCarrier> = {
  set: (carrier, key, value) => {
    if (isHeaderLike(carrier)) carrier.set(key, value);
    else carrier[key] = value;
  },
};

/** Writes traceparent (and tracestate) of ctx's span into carrier, e.g. an outgoing NATS message. */
export function injectTraceHeaders<C extends TraceCarrier>(carrier: C, ctx: Context = context.active()): C {
  propagator.inject(ctx, carrier, carrierSetter);
  return carrier;
}

/** The context of the trace carrier's traceparent belongs to (on top of base), e.g. for a consumed message. */
export function extractTraceContext(carrier: TraceCarrier, base: Context = ROOT_CONTEXT): Context {
  return propagator.extract(base, carrier, carrierGetter);
}

/** The traceparent header value naming span. */
export function traceparentOf(span: Span): string {
  const { traceId, spanId, traceFlags } = span.spanContext();
  return `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

/** The deadline and cancellation of the request being handled, as the server interceptor saw them. */
export interface RequestDeadline {
  /** Epoch milliseconds by which the caller wants an answer; undefined when it set no deadline. */
  readonly deadline: number | undefined;
  /** Aborted when the caller goes away or the deadline passes. */
  readonly signal: AbortSignal;
}

/** The deadline of the RPC whose handler is running now, if any (set by the server tracing interceptor). */
export function activeDeadline(ctx: Context = context.active()): RequestDeadline | undefined {
  return ctx.getValue(deadlineKey) as RequestDeadline | undefined;
}

const timeoutUnits: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 1e-3,
  n: 1e-6,
};

/** The caller's timeout in ms, from grpc-timeout (gRPC, gRPC-Web) or connect-timeout-ms (Connect). */
export function requestTimeoutMs(header: Headers): number | undefined {
  const grpc = header.get("grpc-timeout");
  const match = grpc ? /^(\d{1,8})([HMSmun])$/.exec(grpc) : null;
  if (match) return Number(match[1]) * (timeoutUnits[match[2] ?? "m"] ?? 1);
  const connect = header.get("connect-timeout-ms");
  return connect && /^\d{1,10}$/.test(connect) ? Number(connect) : undefined;
}

// Server spans are errors only for codes that mean the server failed (OTel gRPC conventions).
const serverFaults = new Set([
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
]);

function isGrpc(header: Headers): boolean {
  return header.get("content-type")?.startsWith("application/grpc") === true;
}

function rpcAttributes(req: { service: { typeName: string }; method: { name: string }; header: Headers }) {
  return {
    "rpc.system": isGrpc(req.header) ? "grpc" : "connect_rpc",
    "rpc.service": req.service.typeName,
    "rpc.method": req.method.name,
  };
}

function endSpan(span: Span, error: unknown, isFault: (code: Code) => boolean): void {
  if (error === undefined) {
    span.setAttribute("rpc.grpc.status_code", 0);
  } else {
    const code = rpcErrorCode(error);
    span.setAttribute("rpc.grpc.status_code", code);
    if (isFault(code)) span.setStatus({ code: SpanStatusCode.ERROR });
  }
  span.end();
}

/**
 * A server interceptor continuing the caller's W3C trace: a SERVER span "<package.Service>/<Method>"
 * around the handler (which runs inside its context, with the request's deadline), and a
 * traceparent response header (error metadata on failure) naming it. observers (outermost first)
 * run inside it as interceptors of their own would, in one layer instead of one each.
 */
export function createServerTracingInterceptor(
  tracer: Tracer,
  observers: readonly RpcObserver[] = [],
): Interceptor {
  ensureContextManager();
  // Span name and options per method and protocol, made once (tracers copy, never change them).
  const perMethod = new Map<object, { name: string; grpc: SpanOptions; connect: SpanOptions }>();
  return (next) => (req) => {
    const parent = extractTraceContext(req.header);
    let method = perMethod.get(req.method);
    if (!method) {
      const attributes = { "rpc.service": req.service.typeName, "rpc.method": req.method.name };
      method = {
        name: rpcMethodName(req),
        grpc: { kind: SpanKind.SERVER, attributes: { "rpc.system": "grpc", ...attributes } },
        connect: { kind: SpanKind.SERVER, attributes: { "rpc.system": "connect_rpc", ...attributes } },
      };
      perMethod.set(req.method, method);
    }
    const span = tracer.startSpan(method.name, isGrpc(req.header) ? method.grpc : method.connect, parent);
    const timeoutMs = requestTimeoutMs(req.header);
    const deadline = new CallDeadline(timeoutMs === undefined ? undefined : Date.now() + timeoutMs, req);
    const ctx = trace.setSpan(parent, span).setValue(deadlineKey, deadline);
    const traceparent = traceparentOf(span);
    const observed = observers.length === 0 ? undefined : observers.map((observe) => observe(req));
    return observeRpc(
      next,
      req,
      (error) => {
        let outcome = error;
        if (observed) {
          // Innermost first, each seeing the error the one inside it answers with.
          for (let i = observed.length - 1; i >= 0; i--) {
            const replaced = (observed[i] as (error: unknown) => unknown)(outcome);
            if (error !== undefined && replaced !== undefined) outcome = replaced;
          }
        }
        endSpan(span, outcome, (code) => serverFaults.has(code));
        if (outcome instanceof ConnectError) outcome.metadata.set("traceparent", traceparent);
        return outcome === error ? undefined : outcome;
      },
      (step) => context.with(ctx, step),
      (res) => res.header.set("traceparent", traceparent),
    );
  };
}

// A class, not a literal with a getter: the signal is read from the request only when asked (a
// server may make it on demand), and literals with accessors are slow to create.
class CallDeadline implements RequestDeadline {
  readonly #req: { readonly signal: AbortSignal };

  constructor(
    readonly deadline: number | undefined,
    req: { readonly signal: AbortSignal },
  ) {
    this.#req = req;
  }

  get signal(): AbortSignal {
    return this.#req.signal;
  }
}

/** A client interceptor: a CLIENT span per call, its traceparent sent in the request headers. */
export function createClientTracingInterceptor(tracer: Tracer): Interceptor {
  ensureContextManager();
  return (next) => (req) => {
    const parent = context.active();
    const span = tracer.startSpan(
      rpcMethodName(req),
      { kind: SpanKind.CLIENT, attributes: rpcAttributes(req) },
      parent,
    );
    injectTraceHeaders(req.header, trace.setSpan(parent, span));
    return observeRpc(next, req, (error) => {
      endSpan(span, error, () => true);
      return undefined;
    });
  };
}

/** What observabilityInterceptors wires together. */
export interface Observability {
  readonly logger: Logger;
  readonly metrics?: RpcMetrics;
  /** Omit for a propagate-only tracer. */
  readonly tracer?: Tracer;
}

/**
 * The server interceptors for tracing, metrics and logging, outermost first: tracing wraps the
 * others so log lines carry the trace id, and metrics count the code the client finally sees.
 */
export function observabilityInterceptors(options: Observability): Interceptor[] {
  // One layer doing all three: a layer per concern costs a promise (and its hooks) per call each.
  return [
    createServerTracingInterceptor(options.tracer ?? createPropagatingTracer(), [
      ...(options.metrics ? [createMetricsObserver(options.metrics)] : []),
      createLoggingObserver(options.logger),
    ]),
  ];
}
