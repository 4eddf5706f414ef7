import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { Code, type ConnectError, type ContextValues } from "@connectrpc/connect";
import { type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { type Principal, requestIdKey } from "@trellis/kit/context.js";
import type { Logger } from "@trellis/kit/logger.js";
import { type RpcMetrics, rpcCodeName } from "@trellis/kit/metrics.js";
import { extractTraceContext, injectTraceHeaders, type Tracer } from "@trellis/kit/tracing.js";

/** One call passed through, being observed. */
export interface ObservedCall {
  principal?: Principal;
  upstream?: string;
  /** Writes the call's traceparent into the upstream request headers (with a tracer). */
  inject(headers: OutgoingHttpHeaders): void;
  /** Records the outcome once: log line, metrics, span. */
  finish(code: Code | undefined, error?: ConnectError): void;
}

/** Observes calls that skip the Connect router, in the same log and metric shape as the kit's interceptors. */
export interface RpcObserver {
  start(method: string, headers: IncomingHttpHeaders, values: ContextValues): ObservedCall;
}

const serverFailures = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);
const degraded = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.ResourceExhausted,
  Code.Unimplemented,
]);

interface Inc {
  inc(): void;
}

/**
 * Creates the observer writing to logger and metrics (service "gateway"). With a tracer, each
 * call gets a SERVER span whose traceparent goes upstream; without one the caller's traceparent
 * passes through untouched.
 */
export function createRpcObserver(options: {
  logger: Logger;
  metrics: RpcMetrics;
  tracer?: Tracer;
}): RpcObserver {
  const { logger, metrics, tracer } = options;
  const service = metrics.service;
  // Label children are looked up once per method (and code), not per call.
  const perMethod = new Map<
    string,
    { duration: { observe(v: number): void }; inFlight: Inc & { dec(): void } }
  >();
  const perCode = new Map<string, { requests: Inc; errors?: Inc }>();
  const methodChildren = (method: string) => {
    let c = perMethod.get(method);
    if (!c) {
      c = {
        duration: metrics.duration.labels({ service, method }),
        inFlight: metrics.inFlight.labels({ service, method }),
      };
      perMethod.set(method, c);
    }
    return c;
  };
  const count = (method: string, code: string) => {
    const key = `${method} ${code}`;
    let c = perCode.get(key);
    if (!c) {
      c = {
        requests: metrics.requests.labels({ service, method, code }),
        errors: code === "ok" ? undefined : metrics.errors.labels({ service, method, code }),
      };
      perCode.set(key, c);
    }
    c.requests.inc();
    c.errors?.inc();
  };

  return {
    start(method, headers, values) {
      const started = performance.now();
      const parent = tracer ? extractTraceContext(headers as Record<string, string | undefined>) : undefined;
      const span: Span | undefined =
        tracer && parent
          ? tracer.startSpan(method, { kind: SpanKind.SERVER, attributes: { "rpc.method": method } }, parent)
          : undefined;
      const children = methodChildren(method);
      children.inFlight.inc();
      let finished = false;
      const call: ObservedCall = {
        inject(out) {
          if (span && parent) injectTraceHeaders(out as Record<string, string>, trace.setSpan(parent, span));
        },
        finish(code, error) {
          if (finished) return;
          finished = true;
          const seconds = (performance.now() - started) / 1000;
          children.inFlight.dec();
          children.duration.observe(seconds);
          const name = rpcCodeName(code);
          count(method, name);
          if (span) {
            span.setAttribute("rpc.grpc.status_code", code ?? 0);
            if (code !== undefined && (serverFailures.has(code) || degraded.has(code))) {
              span.setStatus({ code: SpanStatusCode.ERROR });
            }
            span.end();
          }
          const line: Record<string, unknown> = {
            method,
            code: name,
            duration_ms: Math.round(seconds * 1e6) / 1000,
            request_id: values.get(requestIdKey) || undefined,
            user_id: call.principal?.userId,
            tenant_id: call.principal?.tenantId,
            upstream: call.upstream,
          };
          if (code === undefined) logger.info(line, "rpc");
          else if (serverFailures.has(code))
            logger.error({ ...line, err: error?.cause ?? error }, "rpc failed");
          else {
            line.error = error?.rawMessage;
            if (degraded.has(code)) logger.warn(line, "rpc failed");
            else logger.info(line, "rpc failed");
          }
        },
      };
      return call;
    },
  };
}
