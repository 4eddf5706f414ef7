import type { Http2SecureServer, Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { DescMethod, DescMethodUnary } from "@bufbuild/protobuf";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";
import type { ConnectRouter } from "@connectrpc/connect";
import { ConnectUnaryCall, connectUnaryEncoding, createSerializationCache } from "./connect-unary-call.js";
import { UnaryCall, type UnaryCallOptions, type UnaryRoute } from "./grpc-unary-call.js";

/** What the gRPC unary fast path needs from the server: the same interceptors, limits and context as Connect. */
export interface GrpcUnaryOptions extends UnaryCallOptions {
  /** Called as each fast-path call starts (drain tracking, tests); what it returns runs when its stream closes. */
  onCall?(procedure: string): (() => void) | undefined;
}

/** Serves gRPC unary calls straight off HTTP/2 streams, everything else left to connect-node. */
export interface GrpcUnaryFastPath {
  /** A router recording the unary handlers registered on it and passing every registration on to router. */
  record(router: ConnectRouter): ConnectRouter;
  /** Takes the stream if it is a plain gRPC unary call to a recorded method; false leaves it untouched. */
  handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean;
  /** Puts handle in front of the server's request listener; false (nothing changed) if it cannot. */
  install(server: Http2Server | Http2SecureServer): boolean;
}

/**
 * A unary fast path over HTTP/2: a gRPC call (application/grpc(+proto), uncompressed) or a Connect
 * unary POST (application/json or application/proto) to a unary method registered without
 * per-service options runs through the same interceptors and handler Connect would run, without
 * connect-node's per-call streams, abort signals and header copies. Connect GET, gRPC-Web,
 * streaming and HTTP/1.1 stay with connect-node.
 */
export function createGrpcUnaryFastPath(options: GrpcUnaryOptions): GrpcUnaryFastPath {
  const routes = new Map<string, UnaryRoute>();
  // Like connect-node, a later registration of a path replaces an earlier one; a method that is not
  // unary, not implemented or registered with options of its own is left to Connect.
  const put = (method: DescMethod, impl: unknown, self: object | undefined, options: unknown) => {
    const procedure = `/${method.parent.typeName}/${method.name}`;
    if (method.methodKind === "unary" && typeof impl === "function" && options === undefined) {
      const bound = (self ? impl.bind(self) : impl) as UnaryRoute["impl"];
      routes.set(procedure, {
        service: method.parent,
        method: method as DescMethodUnary,
        impl: bound,
        procedure,
      });
    } else {
      routes.delete(procedure);
    }
  };
  const serializers = createSerializationCache(options.readMaxBytes);
  const handle = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean => {
    if (headers[":method"] !== "POST") return false;
    const type = headers["content-type"];
    const grpc = type === "application/grpc" || type === "application/grpc+proto";
    const grpcEncoding = headers["grpc-encoding"];
    if (grpc && grpcEncoding !== undefined && grpcEncoding !== "identity") return false;
    const connectEncoding = grpc ? undefined : connectUnaryEncoding(type);
    if (!grpc && connectEncoding === undefined) return false;
    const route = routes.get(headers[":path"] ?? "");
    if (route === undefined) return false;
    const closed = options.onCall?.(route.procedure);
    const call = grpc
      ? new UnaryCall(options, route, stream, headers, closed)
      : new ConnectUnaryCall(
          options,
          route,
          stream,
          headers,
          closed,
          connectEncoding === "proto",
          serializers.of(route),
          serializers.limits.compressMinBytes,
        );
    call.start();
    return true;
  };
  return {
    record(router) {
      const recording = {
        get handlers() {
          return router.handlers;
        },
        service(service, implementation, serviceOptions) {
          router.service(service, implementation, serviceOptions);
          // Per-service options may change interceptors, limits or protocols: Connect serves those.
          for (const method of service.methods) {
            const impl = (implementation as Record<string, unknown>)[method.localName];
            put(method, impl, implementation, serviceOptions);
          }
          return recording;
        },
        rpc(method, impl, rpcOptions) {
          router.rpc(method, impl, rpcOptions);
          put(method, impl, undefined, rpcOptions);
          return recording;
        },
      } as ConnectRouter;
      return recording;
    },
    handle,
    install(server) {
      // node:http2 makes its request/response compatibility objects in a "stream" listener; fast-path
      // streams skip it (it costs about as much as the whole call), all others get it unchanged.
      const compat = server.listeners("stream") as Array<(...args: unknown[]) => void>;
      if (compat.length === 0) return false;
      server.removeAllListeners("stream");
      server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
        if (handle(stream, headers)) return;
        for (const listener of compat) listener.call(server, stream, headers, ...rest);
      });
      return true;
    },
  };
}

const encodeUtf8 = (text: string) => Buffer.from(text, "utf8") as Uint8Array<ArrayBuffer>;

/**
 * Makes protobuf-es encode strings with Buffer instead of TextEncoder (same bytes, several times
 * cheaper on Node 20). Process-wide, as protobuf-es's text encoding is; decoding is left as it is.
 */
export function useBufferTextEncoding(): void {
  const current = getTextEncoding();
  if (current.encodeUtf8 !== encodeUtf8) configureTextEncoding({ ...current, encodeUtf8 });
}
