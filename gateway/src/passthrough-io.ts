import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from "node:http";
import { type ClientHttp2Stream, constants as h2 } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeFromHttpStatus, codeToHttpStatus, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import type { Instance } from "./balancer.js";
import type { ObservedCall } from "./observe.js";
import type { NodeRequest, NodeResponse } from "./rest-http.js";

/** The protocols the pass-through speaks: gRPC, and Connect unary. */
export type Protocol = "grpc" | "connect";

/** Response headers and trailers of a stream, as node:http2 hands them over. */
export type StreamHeaders = Record<string, string | string[] | number | undefined>;

const droppedResponse = new Set(["connection", "keep-alive", "transfer-encoding", "date", "server"]);
/** The caller's timeout in ms from grpc-timeout or connect-timeout-ms, if it set one. */
export function parseTimeoutMs(headers: IncomingHttpHeaders): number | undefined {
  const grpc = headers["grpc-timeout"];
  const m = typeof grpc === "string" ? /^(\d{1,8})([HMSmun])$/.exec(grpc) : null;
  if (m) {
    const unit = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as "H"];
    return Number(m[1]) * unit;
  }
  const connect = headers["connect-timeout-ms"];
  return typeof connect === "string" && /^\d{1,10}$/.test(connect) ? Number(connect) : undefined;
}

/** A request body over the limit. */
export const tooLarge = new ConnectError("request message too large", Code.ResourceExhausted);

/** Reads the whole request body, refusing more than maxBytes (resource_exhausted). */
export function readBody(req: NodeRequest, maxBytes: number): Promise<Buffer> {
  if (Number(req.headers["content-length"]) > maxBytes) return Promise.reject(tooLarge);
  // Events rather than an async iterator: this runs on every call.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        cleanup();
        reject(tooLarge);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    };
    const onError = (error: unknown) => {
      cleanup();
      reject(error);
    };
    // The client went away before sending it all.
    const onClose = () => onError(new ConnectError("client went away", Code.Canceled));
    const cleanup = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
  });
}

/** Writes a gateway-made error in the request's protocol (gRPC trailers-only, or Connect JSON). */
export function writeError(res: NodeResponse, protocol: Protocol, error: ConnectError): void {
  if (res.headersSent) {
    if (protocol === "grpc") {
      const trailers: Record<string, string> = {};
      setTrailerStatus(new Headers(), error).forEach((v, k) => {
        trailers[k] = v;
      });
      res.addTrailers(trailers);
    }
    res.end();
    return;
  }
  const headers: Record<string, string> = {};
  error.metadata.forEach((v, k) => {
    headers[k] = v;
  });
  if (protocol === "grpc") {
    setTrailerStatus(new Headers(), error).forEach((v, k) => {
      headers[k] = v;
    });
    headers["content-type"] = "application/grpc+proto";
    (res as ServerResponse).writeHead(200, headers);
    res.end();
  } else {
    headers["content-type"] = "application/json";
    (res as ServerResponse).writeHead(codeToHttpStatus(error.code), headers);
    res.end(errorToJsonBytes(error, {}));
  }
}

/** Resolves with the upstream response headers; rejects when the stream fails or closes first. */
export function waitForResponse(stream: ClientHttp2Stream): Promise<StreamHeaders> {
  return new Promise((resolve, reject) => {
    const onResponse = (headers: StreamHeaders) => {
      stream.off("error", onError);
      stream.off("close", onClose);
      resolve(headers);
    };
    const onError = (error: unknown) => {
      stream.off("response", onResponse);
      stream.off("close", onClose);
      reject(error);
    };
    const onClose = () => {
      stream.off("response", onResponse);
      stream.off("error", onError);
      const refused = stream.rstCode === h2.NGHTTP2_REFUSED_STREAM;
      reject(new ConnectError(refused ? "REFUSED_STREAM" : "upstream closed the stream", Code.Unavailable));
    };
    stream.once("response", onResponse);
    stream.once("error", onError);
    stream.once("close", onClose);
  });
}

/**
 * Copies the upstream answer (status, headers, data with back-pressure, trailers) to the client,
 * ends the observed call, and turns a failure after the answer began into unavailable (or
 * deadline_exceeded once the deadline guard fired).
 */
export function relay(
  instance: Instance,
  stream: ClientHttp2Stream,
  head: StreamHeaders,
  res: NodeResponse,
  protocol: Protocol,
  call: ObservedCall,
  release: () => void,
  expired: { readonly value: boolean },
): void {
  const status = Number(head[":status"]);
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(head)) {
    if (!name.startsWith(":") && !droppedResponse.has(name) && value !== undefined) headers[name] = value;
  }
  let code: Code | undefined;
  if (protocol === "connect") code = status === 200 ? undefined : codeFromHttpStatus(status);
  else if (head["grpc-status"] !== undefined) code = Number(head["grpc-status"]) || undefined;
  (res as ServerResponse).writeHead(status, headers);
  stream.on("data", (chunk: Buffer) => {
    instance.sessions.notifyResponseByteRead(stream);
    if (!(res as ServerResponse).write(chunk)) {
      stream.pause();
      res.once("drain", () => stream.resume());
    }
  });
  stream.on("trailers", (trailers: Record<string, string | string[] | undefined>) => {
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(trailers)) {
      if (!name.startsWith(":") && value !== undefined) out[name] = String(value);
    }
    if (out["grpc-status"] !== undefined) code = Number(out["grpc-status"]) || undefined;
    res.addTrailers(out);
  });
  let done = false;
  stream.once("end", () => {
    if (done) return;
    done = true;
    release();
    call.finish(code);
    res.end();
  });
  // Reset or failed after the answer began: end the client's call as unavailable.
  const broken = () => {
    if (done) return;
    done = true;
    release();
    const error = expired.value
      ? new ConnectError("deadline exceeded", Code.DeadlineExceeded)
      : new ConnectError("upstream dropped the call", Code.Unavailable);
    call.finish(error.code, error);
    if (!res.destroyed) writeError(res, protocol, error);
  };
  stream.once("error", broken);
  stream.once("close", () => setImmediate(broken));
}
