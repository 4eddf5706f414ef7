import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { DescMethod, JsonValue } from "@bufbuild/protobuf";
import { Code, type ContextValues } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { rpcCodeName } from "@trellis/kit/metrics.js";
import { matchRoute, RestInputError, type RestRoute, restRequestJson } from "./rest.js";

/** A request from node:http or node:http2. */
export type NodeRequest = IncomingMessage | Http2ServerRequest;
/** A response of node:http or node:http2. */
export type NodeResponse = ServerResponse | Http2ServerResponse;

/** Writes a Connect-style JSON error ({code, message}) with an HTTP status. */
export function writeJsonError(
  res: NodeResponse,
  status: number,
  code: Code,
  message: string,
  headers: Record<string, string> = {},
): void {
  const body = JSON.stringify({ code: rpcCodeName(code), message });
  (res as ServerResponse).writeHead(status, { ...headers, "content-type": "application/json" });
  res.end(body);
}

const tooLarge = Symbol("too large");

async function readBody(req: NodeRequest, maxBytes: number): Promise<Buffer | typeof tooLarge> {
  const declared = Number(req.headers["content-length"]);
  if (declared > maxBytes) return tooLarge;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) return tooLarge;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Options of createRestHandler. */
export interface RestHandlerOptions {
  readonly routes: readonly RestRoute[];
  /** The Connect handler serving a method (with every interceptor), once the router is built. */
  readonly handlerFor: (method: DescMethod) => UniversalHandler | undefined;
  readonly maxBodyBytes: number;
  readonly contextValues: (req: NodeRequest) => ContextValues;
}

/**
 * Serves REST routes by turning each request into the method's Connect JSON request and running
 * it through the same handler (and so the same auth, limits, logs and forwarding) as RPC calls.
 * Resolves false when no route matches. Errors answer in Connect's JSON form and HTTP statuses;
 * an oversized body gets 413, a malformed one 400.
 */
export function createRestHandler(options: RestHandlerOptions) {
  const { routes, maxBodyBytes } = options;
  return async (req: NodeRequest, res: NodeResponse, path: string, search: string): Promise<boolean> => {
    const matched = matchRoute(routes, req.method ?? "GET", path);
    if (!matched) return false;
    const handler = options.handlerFor(matched.route.method);
    if (!handler) return false;
    let body: JsonValue | undefined;
    if (matched.route.body !== "") {
      const raw = await readBody(req, maxBodyBytes);
      if (raw === tooLarge) {
        // The rest of the body is not read: close an HTTP/1.1 connection rather than drain it.
        const close: Record<string, string> = req.httpVersionMajor === 1 ? { connection: "close" } : {};
        writeJsonError(res, 413, Code.ResourceExhausted, "request body too large", close);
        return true;
      }
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw.toString("utf8")) as JsonValue;
        } catch {
          writeJsonError(res, 400, Code.InvalidArgument, "malformed JSON body");
          return true;
        }
      }
    }
    let json: JsonValue;
    try {
      json = restRequestJson(matched.route, matched.params, new URLSearchParams(search), body);
    } catch (error) {
      if (!(error instanceof RestInputError)) throw error;
      writeJsonError(res, 400, Code.InvalidArgument, error.message);
      return true;
    }
    const universal = universalRequestFromNodeRequest(req, res, json, options.contextValues(req));
    const header = new Headers(universal.header);
    header.set("content-type", "application/json");
    header.delete("content-length");
    header.delete("content-encoding");
    const response = await handler({ ...universal, method: "POST", header });
    await universalResponseToNodeResponse(response, res);
    return true;
  };
}
