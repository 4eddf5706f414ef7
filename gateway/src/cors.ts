import type { IncomingHttpHeaders } from "node:http";

/** Request headers browsers may send: Connect, gRPC-Web, auth and tracing. */
export const corsAllowedHeaders = [
  "authorization",
  "content-type",
  "connect-protocol-version",
  "connect-timeout-ms",
  "connect-accept-encoding",
  "connect-content-encoding",
  "grpc-timeout",
  "grpc-accept-encoding",
  "x-grpc-web",
  "x-user-agent",
  "x-request-id",
  "traceparent",
  "tracestate",
];

/** Response headers scripts may read: RPC status, retry hints, ids. */
export const corsExposedHeaders = [
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "grpc-encoding",
  "connect-content-encoding",
  "retry-after",
  "x-request-id",
  "traceparent",
];

/** Methods REST routes and the Connect protocol use. */
export const corsAllowedMethods = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/** The outcome of CORS for one request: headers to add, and whether it was a preflight answered here. */
export interface CorsDecision {
  readonly headers: Readonly<Record<string, string>>;
  /** Set for preflights: the status to answer with (204 allowed, 403 refused); nothing is forwarded. */
  readonly preflightStatus?: number;
}

/** Answers CORS for the configured origins ("*" allows any origin). */
export function createCors(origins: readonly string[], maxAgeSec = 7200) {
  const any = origins.includes("*");
  const allowed = new Set(origins);
  const allowHeaders = corsAllowedHeaders.join(", ");
  const exposeHeaders = corsExposedHeaders.join(", ");
  const allowMethods = corsAllowedMethods.join(", ");

  return (method: string | undefined, headers: IncomingHttpHeaders): CorsDecision | undefined => {
    const origin = headers.origin;
    if (origin === undefined) return undefined;
    const isPreflight = method === "OPTIONS" && headers["access-control-request-method"] !== undefined;
    if (!any && !allowed.has(origin)) return isPreflight ? { headers: {}, preflightStatus: 403 } : undefined;
    const base = { "access-control-allow-origin": any ? "*" : origin, vary: "Origin" };
    if (!isPreflight) return { headers: { ...base, "access-control-expose-headers": exposeHeaders } };
    return {
      preflightStatus: 204,
      headers: {
        ...base,
        "access-control-allow-methods": allowMethods,
        "access-control-allow-headers": allowHeaders,
        "access-control-max-age": String(maxAgeSec),
      },
    };
  };
}
