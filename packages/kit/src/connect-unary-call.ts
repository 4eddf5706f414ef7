import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { DescMessage, Message } from "@bufbuild/protobuf";
import { Code, ConnectError, type UnaryResponse } from "@connectrpc/connect";
import {
  type Compression,
  compressionNegotiate,
  createMethodSerializationLookup,
  type MethodSerializationLookup,
  validateReadWriteMaxBytes,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  contentTypeUnaryJson,
  contentTypeUnaryProto,
  errorToJsonBytes,
  parseContentType,
  parseTimeout,
  trailerMux,
} from "@connectrpc/connect/protocol-connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import {
  closeWhenAnswered,
  DONE,
  FastUnaryCall,
  READING,
  toConnectError,
  toNodeHeaders,
  type UnaryCallOptions,
  type UnaryRoute,
} from "./grpc-unary-call.js";

type Lookup = MethodSerializationLookup<DescMessage, DescMessage>;

// What connect-node's handler accepts and answers with by default (connectNodeAdapter's defaults).
const acceptCompression: Compression[] = [compressionGzip, compressionBrotli];

/** Whether a POST with this content type is a Connect unary call, and in which encoding. */
export function connectUnaryEncoding(contentType: string | undefined): "json" | "proto" | undefined {
  const type = contentType === undefined ? undefined : parseContentType(contentType);
  if (type === undefined || type.stream) return undefined;
  return type.binary ? "proto" : "json";
}

/** Serializers per method, with connect-node's default JSON and binary options and the server's limits. */
export function createSerializationCache(readMaxBytes: number) {
  const limits = validateReadWriteMaxBytes(readMaxBytes, undefined, undefined);
  const cache = new Map<object, Lookup>();
  return {
    limits,
    of(route: UnaryRoute): Lookup {
      let lookup = cache.get(route.method);
      if (lookup === undefined) {
        lookup = createMethodSerializationLookup(route.method, undefined, undefined, limits);
        cache.set(route.method, lookup);
      }
      return lookup;
    },
  };
}

/**
 * A Connect unary call over HTTP/2 (POST, application/json or application/proto, the whole body one
 * message): the request and answer exactly as connect-node's handler reads and writes them — the
 * same serializers, limits, compression, error JSON, HTTP status per code and trailer- headers.
 */
export class ConnectUnaryCall extends FastUnaryCall {
  readonly protocolName = "connect";
  private readonly compression: ReturnType<typeof compressionNegotiate>;

  constructor(
    options: UnaryCallOptions,
    route: UnaryRoute,
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    closed: (() => void) | undefined,
    private readonly binary: boolean,
    private readonly serialization: Lookup,
    private readonly compressMinBytes: number,
  ) {
    super(options, route, stream, headers, closed);
    this.compression = compressionNegotiate(
      acceptCompression,
      headerText(headers["content-encoding"]),
      headerText(headers["accept-encoding"]),
      "accept-encoding",
    );
  }

  protected readHeaders(): { timeoutMs?: number; error?: ConnectError } {
    if (this.compression.error) return { error: this.compression.error };
    const length = Number(this.headers["content-length"]);
    if (length > this.options.readMaxBytes) {
      return { error: tooLarge(this.options.readMaxBytes, length) };
    }
    return parseTimeout(headerText(this.headers["connect-timeout-ms"]), Number.MAX_SAFE_INTEGER);
  }

  protected check(): void {
    if (this.size > this.options.readMaxBytes) this.answerError(tooLarge(this.options.readMaxBytes));
  }

  protected decode(body: Buffer | undefined): Message | Promise<Message> {
    const bytes = body ?? new Uint8Array(0);
    const input = this.serialization.getI(this.binary);
    const request = this.compression.request;
    if (request === null) return input.parse(bytes);
    return request.decompress(bytes, this.options.readMaxBytes).then((plain) => input.parse(plain));
  }

  protected startHeader(): Headers {
    return new Headers({ "content-type": this.binary ? contentTypeUnaryProto : contentTypeUnaryJson });
  }

  protected answer(res: UnaryResponse): void {
    if (this.phase === DONE) return;
    let body: Uint8Array;
    try {
      body = this.serialization.getO(this.binary).serialize(res.message);
    } catch (error) {
      this.answerError(toConnectError(error));
      return;
    }
    this.phase = DONE;
    this.end();
    this.write(200, res.header, res.trailer, body);
  }

  protected answerError(error: ConnectError): void {
    if (this.phase === DONE) return;
    const reading = this.phase === READING;
    this.phase = DONE;
    this.end(reading ? undefined : error);
    const header = this.responseHeader ?? new Headers();
    header.set("content-type", contentTypeUnaryJson);
    error.metadata.forEach((value, key) => {
      header.set(key, value);
    });
    this.write(
      codeToHttpStatus(error.code),
      header,
      this.responseTrailer ?? new Headers(),
      errorToJsonBytes(error, undefined),
    );
    if (!this.stream.readableEnded) closeWhenAnswered(this.stream);
  }

  private write(status: number, header: Headers, trailer: Headers, body: Uint8Array): void {
    const compression = this.compression.response;
    if (compression !== null && body.byteLength >= this.compressMinBytes) {
      compression.compress(body).then(
        (compressed) => {
          header.set("content-encoding", compression.name);
          this.send(status, header, trailer, compressed);
        },
        () => this.send(status, header, trailer, body),
      );
      return;
    }
    this.send(status, header, trailer, body);
  }

  private send(status: number, header: Headers, trailer: Headers, body: Uint8Array): void {
    const stream = this.stream;
    if (stream.destroyed) return;
    const head: OutgoingHttpHeaders = toNodeHeaders(trailerMux(header, trailer), { ":status": status });
    head["content-length"] = body.byteLength;
    try {
      stream.respond(head);
    } catch {
      // Headers Node refuses (connection-specific ones set by a handler): answer without them.
      if (stream.headersSent || stream.destroyed) return;
      stream.respond({
        ":status": status,
        "content-type": head["content-type"] ?? contentTypeUnaryJson,
        "content-length": body.byteLength,
      });
    }
    stream.end(body);
  }
}

function headerText(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return typeof value === "string" ? value : value.join(", ");
}

function tooLarge(max: number, size?: number): ConnectError {
  const message =
    size === undefined
      ? `message size is larger than configured readMaxBytes ${max}`
      : `message size ${size} is larger than configured readMaxBytes ${max}`;
  return new ConnectError(message, Code.ResourceExhausted);
}
