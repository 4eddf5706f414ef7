import type { OutgoingHttpHeaders } from "node:http";
import { type ClientHttp2Stream, constants as h2 } from "node:http2";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import { type MethodAccessRule, methodAccess } from "@trellis/kit/access.js";
import { isIdempotent } from "@trellis/kit/client.js";
import { requestIdKey } from "@trellis/kit/context.js";
import type { TokenVerifier } from "@trellis/kit/tokens.js";
import { type Instance, type InstancePool, isConnectionFailure, wasNotSent } from "./balancer.js";
import { clientAddressKey, forwardedForKey } from "./context.js";
import { toClientError } from "./forward.js";
import type { RpcObserver } from "./observe.js";
import {
  type Protocol,
  parseTimeoutMs,
  readBody,
  relay,
  waitForResponse,
  writeError,
} from "./passthrough-io.js";
import { type RateLimiter, rateLimitedError } from "./rate-limit.js";
import type { NodeRequest, NodeResponse } from "./rest-http.js";
import type { RoutedService } from "./routes.js";

/** What the pass-through needs: the routes, the checks and the limits. */
export interface PassThroughOptions {
  readonly services: readonly RoutedService[];
  readonly pools: Readonly<Record<string, InstancePool>>;
  readonly verifier: TokenVerifier;
  readonly limiter: RateLimiter;
  readonly onLimited: (scope: "address" | "principal", method: string) => void;
  readonly onRetry: (pool: string, method: DescMethod) => void;
  readonly maxBodyBytes: number;
  readonly defaultTimeoutMs: number;
  readonly maxTimeoutMs: number;
  readonly maxAttempts?: number;
  readonly observe: RpcObserver;
}

interface Route {
  readonly method: DescMethod;
  readonly name: string;
  readonly pool: InstancePool;
  readonly rule: MethodAccessRule;
  readonly idempotent: boolean;
}

// Connection-specific request headers (HTTP/2 forbids them) and the ones the gateway sets itself.
const dropped = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "host",
  "http2-settings",
  "content-length",
  "grpc-timeout",
  "connect-timeout-ms",
  "x-forwarded-for",
  "x-request-id",
]);
const bearerPattern = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;
const grpcContentType = /^application\/grpc(\+proto)?(;|$)/;
const connectUnaryContentType = /^application\/(json|proto)(;|$)/;

/**
 * The hot path: gRPC (over HTTP/2) and Connect unary calls (JSON or binary, HTTP/1.1 or 2) are
 * checked (limits, token, permission, size, deadline) and then passed byte for byte to an
 * instance of the owning service over its HTTP/2 connection, in the same protocol, without
 * decoding messages. Idempotent calls (and calls that never left) are resent to another instance
 * when the connection fails before an answer. Everything else (gRPC-Web, Connect GET and
 * streams, REST) goes through the Connect router, which transcodes. Answers false when the
 * request is not for this path.
 */
export function createPassThrough(options: PassThroughOptions) {
  const maxAttempts = options.maxAttempts ?? 3;
  const routes = new Map<string, Route>();
  for (const service of options.services) {
    const pool = options.pools[service.upstream];
    if (!pool) continue;
    for (const method of service.methods) {
      const rule = methodAccess(method);
      if (!rule || method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming")
        continue;
      const name = `${service.desc.typeName}/${method.name}`;
      routes.set(`/${name}`, { method, name, pool, rule, idempotent: isIdempotent(method) });
    }
  }

  const admit = async (route: Route, req: NodeRequest, values: ContextValues) => {
    let wait = options.limiter.take(route.name, { address: values.get(clientAddressKey) });
    if (wait > 0) {
      options.onLimited("address", route.name);
      throw rateLimitedError(wait);
    }
    if (route.rule.audience === "public") return undefined;
    const header = req.headers.authorization;
    const token = typeof header === "string" ? bearerPattern.exec(header)?.[1] : undefined;
    if (!token) throw new ConnectError("access token required", Code.Unauthenticated);
    const principal = await options.verifier.verify(token);
    if (route.rule.permission !== "" && !principal.permissions.has(route.rule.permission)) {
      throw new ConnectError("permission denied", Code.PermissionDenied);
    }
    wait = options.limiter.take(route.name, { user: principal.userId, tenant: principal.tenantId });
    if (wait > 0) {
      options.onLimited("principal", route.name);
      throw rateLimitedError(wait);
    }
    return principal;
  };

  const upstreamHeaders = (
    req: NodeRequest,
    protocol: Protocol,
    timeoutMs: number,
    values: ContextValues,
  ) => {
    const out: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (name.startsWith(":") || dropped.has(name) || value === undefined) continue;
      if (name === "te" && value !== "trailers") continue;
      out[name] = value;
    }
    if (protocol === "grpc") out["grpc-timeout"] = `${Math.max(1, Math.ceil(timeoutMs))}m`;
    else out["connect-timeout-ms"] = String(Math.max(1, Math.ceil(timeoutMs)));
    out["x-request-id"] = values.get(requestIdKey);
    out["x-forwarded-for"] = values.get(forwardedForKey);
    return out;
  };

  return (req: NodeRequest, res: NodeResponse, path: string, values: ContextValues): boolean => {
    if (req.method !== "POST") return false;
    const route = routes.get(path);
    if (!route) return false;
    const contentType = req.headers["content-type"] ?? "";
    let protocol: Protocol;
    if (req.httpVersionMajor === 2 && grpcContentType.test(contentType)) protocol = "grpc";
    else if (route.method.methodKind === "unary" && connectUnaryContentType.test(contentType))
      protocol = "connect";
    else return false;

    const call = options.observe.start(route.name, req.headers, values);
    let upstream: ClientHttp2Stream | undefined;
    const expired = { value: false };
    res.once("close", () => {
      // The client went away before the answer was complete: cancel the upstream call.
      if (!res.writableFinished && upstream && !upstream.closed) upstream.close(h2.NGHTTP2_CANCEL);
    });

    const run = async () => {
      call.principal = await admit(route, req, values);
      const body = await readBody(req, options.maxBodyBytes);
      const timeoutMs = Math.min(
        parseTimeoutMs(req.headers) ?? options.defaultTimeoutMs,
        options.maxTimeoutMs,
      );
      const deadline = Date.now() + timeoutMs;
      // The service answers deadline_exceeded itself; this only frees a call it never answers.
      const guard = setTimeout(() => {
        expired.value = true;
        upstream?.close(h2.NGHTTP2_CANCEL);
      }, timeoutMs + 1000);
      res.once("close", () => clearTimeout(guard));
      const tried = new Set<Instance>();
      for (let n = 1; ; n++) {
        const instance = route.pool.pick(tried);
        if (!instance) throw new ConnectError("upstream unavailable", Code.Unavailable);
        tried.add(instance);
        instance.inFlight++;
        let held = true;
        const release = () => {
          if (held) instance.inFlight--;
          held = false;
        };
        try {
          const headers = upstreamHeaders(req, protocol, deadline - Date.now(), values);
          call.inject(headers);
          const stream = await instance.sessions.request("POST", path, headers, {});
          upstream = stream;
          stream.end(body);
          const head = await waitForResponse(stream);
          // A trailers-only gRPC unavailable, or Connect's 503, means the instance could not take it.
          const refused =
            protocol === "grpc" ? head["grpc-status"] === String(Code.Unavailable) : head[":status"] === 503;
          if (refused && n < maxAttempts && route.idempotent && deadline - Date.now() > 1) {
            stream.close(h2.NGHTTP2_CANCEL);
            throw new ConnectError("upstream unavailable", Code.Unavailable);
          }
          route.pool.record(instance, undefined);
          call.upstream = instance.url;
          relay(instance, stream, head, res, protocol, call, release, expired);
          return;
        } catch (raw) {
          release();
          if (res.destroyed) throw new ConnectError("client went away", Code.Canceled);
          if (expired.value) throw new ConnectError("deadline exceeded", Code.DeadlineExceeded);
          const error =
            raw instanceof ConnectError
              ? raw
              : new ConnectError("upstream failed", Code.Unavailable, undefined, undefined, raw);
          route.pool.record(instance, error);
          const retry =
            n < maxAttempts &&
            deadline - Date.now() > 1 &&
            isConnectionFailure(error) &&
            (route.idempotent || wasNotSent(error));
          if (!retry) throw toClientError(error);
          options.onRetry(route.pool.name, route.method);
        }
      }
    };
    run().catch((raw: unknown) => {
      const error = raw instanceof ConnectError ? raw : ConnectError.from(raw, Code.Internal);
      call.finish(error.code, error);
      if (!res.destroyed) writeError(res, protocol, error);
    });
    return true;
  };
}
