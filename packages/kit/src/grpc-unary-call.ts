import {
  constants,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import {
  create,
  type DescMethodUnary,
  type DescService,
  fromBinary,
  isMessage,
  type Message,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { grpcStatusOk, parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { CallContext, CallRequest, type CallState, RequestHeaders } from "./grpc-unary-context.js";

/** What a fast-path call needs from the server: the same interceptors, limits and context as Connect. */
export interface UnaryCallOptions {
  /** The server's interceptors, outermost first, as connectNodeAdapter gets them. */
  readonly interceptors: readonly Interceptor[];
  /** Largest request message accepted; larger gets resource_exhausted. */
  readonly readMaxBytes: number;
  /** Aborts the handlers' signals when shutdown stops waiting for them. */
  readonly shutdownSignal?: AbortSignal;
  /** The call's context values (caller identity, request id), as for Connect's contextValues option. */
  contextValues(headers: IncomingHttpHeaders, stream: ServerHttp2Stream): ContextValues;
}

/** A unary method's handler, as registered on the router. */
export interface UnaryRoute {
  readonly service: DescService;
  readonly method: DescMethodUnary;
  readonly impl: (request: Message, context: HandlerContext) => unknown;
  /** "/package.Service/Method" */
  readonly procedure: string;
}

type AnyFn = Parameters<Interceptor>[0];

/** A call's phases: reading the request, running interceptors and handler, answered. */
export const READING = 0;
const RUNNING = 1;
export const DONE = 2;
const ignore = () => {};

/**
 * One unary call on the fast path: collects the request body, runs interceptors and handler as
 * Connect would, and writes the answer. The wire format (gRPC here, Connect in connect-unary-call.ts)
 * is the subclass's: how the deadline is sent, how the body is checked and decoded, how answers look.
 */
export abstract class FastUnaryCall implements CallState {
  abstract readonly protocolName: string;
  protected phase = READING;
  protected first: Buffer | undefined = undefined;
  protected rest: Buffer[] | undefined = undefined;
  protected size = 0;
  private deadline = 0;
  private timer: NodeJS.Timeout | undefined = undefined;
  // The handler's AbortSignal is made only if someone reads it.
  private controller: AbortController | undefined = undefined;
  private aborted = false;
  private reason: unknown = undefined;
  private onShutdown: (() => void) | undefined = undefined;
  private rejectHandler: ((reason: unknown) => void) | undefined = undefined;
  protected responseHeader: Headers | undefined = undefined;
  protected responseTrailer: Headers | undefined = undefined;

  constructor(
    protected readonly options: UnaryCallOptions,
    protected readonly route: UnaryRoute,
    protected readonly stream: ServerHttp2Stream,
    protected readonly headers: IncomingHttpHeaders,
    private readonly closed: (() => void) | undefined,
  ) {}

  /** What the request headers ask: the caller's deadline, or the error they deserve. */
  protected abstract readHeaders(): { timeoutMs?: number; error?: ConnectError };
  /** Checks the body read so far (this.size bytes); answers an error to stop the call. */
  protected abstract check(): void;
  /** The request message from the whole body (this.size bytes, possibly none). */
  protected abstract decode(body: Buffer | undefined): Message | Promise<Message>;
  /** The response headers a handler starts with. */
  protected abstract startHeader(): Headers;
  /** Writes the handler's answer. */
  protected abstract answer(res: UnaryResponse): void;
  /** Writes error as the answer (once; later calls do nothing). */
  protected abstract answerError(error: ConnectError): void;

  start(): void {
    const stream = this.stream;
    stream.on("error", ignore);
    stream.on("close", () => this.onClose());
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.on("end", () => this.onEnd());
    const parsed = this.readHeaders();
    if (parsed.error) {
      this.answerError(parsed.error);
    } else if (parsed.timeoutMs !== undefined) {
      this.deadline = Date.now() + parsed.timeoutMs;
      this.timer = setTimeout(() => this.onDeadline(), parsed.timeoutMs);
    }
  }

  signal(): AbortSignal {
    let controller = this.controller;
    if (controller === undefined) {
      controller = this.controller = new AbortController();
      const shutdown = this.options.shutdownSignal;
      if (this.aborted) {
        controller.abort(this.reason);
      } else if (shutdown?.aborted) {
        this.abort(shutdown.reason);
      } else if (shutdown) {
        this.onShutdown = () => this.abort(shutdown.reason);
        shutdown.addEventListener("abort", this.onShutdown);
      }
    }
    return controller.signal;
  }

  remaining(): number | undefined {
    return this.deadline === 0 ? undefined : this.deadline - Date.now();
  }

  /** The innermost step: the handler with a HandlerContext made from the request, as Connect does. */
  invoke(req: UnaryRequest): Promise<UnaryResponse> {
    this.responseHeader = this.startHeader();
    this.responseTrailer = new Headers();
    const context = new CallContext(req, this, this.responseHeader, this.responseTrailer);
    let output: unknown;
    try {
      output = this.route.impl(req.message, context);
    } catch (error) {
      return Promise.reject(error);
    }
    if (typeof (output as PromiseLike<unknown> | undefined)?.then !== "function") {
      return Promise.resolve(this.response(req, output));
    }
    let pending = Promise.resolve(output);
    // A handler that ignores its signal still ends at the deadline, and the interceptors see it end.
    if (this.timer !== undefined) pending = this.untilDeadline(pending);
    return pending.then((message) => this.response(req, message));
  }

  private response(req: UnaryRequest, output: unknown): UnaryResponse {
    const method = this.route.method;
    const schema = method.output;
    return {
      stream: false,
      service: req.service,
      method,
      header: this.responseHeader as Headers,
      trailer: this.responseTrailer as Headers,
      // Handlers may answer with a message or with its init object.
      message: isMessage(output, schema) ? output : create(schema, output as never),
    };
  }

  private untilDeadline(output: Promise<unknown>): Promise<unknown> {
    if (this.aborted) return Promise.reject(this.reason);
    return new Promise((resolve, reject) => {
      this.rejectHandler = reject;
      output.then(resolve, reject);
    });
  }

  private abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    if (this.onShutdown) {
      this.options.shutdownSignal?.removeEventListener("abort", this.onShutdown);
      this.onShutdown = undefined;
    }
    this.controller?.abort(reason);
    const reject = this.rejectHandler;
    this.rejectHandler = undefined;
    reject?.(reason);
  }

  private onData(chunk: Buffer): void {
    if (this.phase !== READING) return;
    if (this.first === undefined) this.first = chunk;
    else if (this.rest === undefined) this.rest = [chunk];
    else this.rest.push(chunk);
    this.size += chunk.length;
    this.check();
  }

  protected joined(): Buffer {
    const all = Buffer.concat(this.rest ? [this.first as Buffer, ...this.rest] : [this.first as Buffer]);
    this.first = all;
    this.rest = undefined;
    return all;
  }

  private onEnd(): void {
    if (this.phase !== READING) return;
    const body = this.first === undefined ? undefined : this.rest ? this.joined() : this.first;
    this.first = undefined;
    let message: Message | Promise<Message>;
    try {
      message = this.decode(body);
    } catch (error) {
      this.answerError(toConnectError(error));
      return;
    }
    if (!(message instanceof Promise)) {
      this.run(message);
      return;
    }
    message.then(
      (decoded) => {
        if (this.phase === READING) this.run(decoded);
      },
      (error: unknown) => this.answerError(toConnectError(error)),
    );
  }

  private run(message: Message): void {
    this.phase = RUNNING;
    const { route, headers, stream } = this;
    const scheme = stream.session?.encrypted ? "https://" : "http://";
    const req = new CallRequest(
      route.service,
      route.method,
      scheme + (headers[":authority"] ?? headers.host ?? "") + route.procedure,
      new RequestHeaders(headers),
      this.options.contextValues(headers, stream),
      message,
      this,
    );
    // Built per call, as Connect does, so interceptors see exactly what they would there.
    const interceptors = this.options.interceptors;
    let next = innermost(this);
    for (let i = interceptors.length - 1; i >= 0; i--) next = (interceptors[i] as Interceptor)(next);
    let result: Promise<unknown>;
    try {
      result = next(req);
    } catch (error) {
      result = Promise.reject(error);
    }
    result.then(
      (res) => this.answer(res as UnaryResponse),
      (error: unknown) => this.answerError(toConnectError(error)),
    );
  }

  private onDeadline(): void {
    this.timer = undefined;
    const error = new ConnectError("the operation timed out", Code.DeadlineExceeded);
    if (this.phase === READING) {
      this.answerError(error);
      return;
    }
    this.abort(error);
    // The interceptors normally finish with this error within microtasks; answer anyway if one hangs.
    setImmediate(() => this.answerError(error));
  }

  private onClose(): void {
    this.closed?.();
    if (this.phase === DONE) return;
    // The client reset the stream, or the connection went away, before the answer.
    const code = this.stream.rstCode ?? constants.NGHTTP2_CANCEL;
    this.phase = DONE;
    const reason = new ConnectError(
      `http/2 stream closed with error code ${code}`,
      code === constants.NGHTTP2_REFUSED_STREAM ? Code.Unavailable : Code.Canceled,
    );
    this.end(reason);
  }

  /** Clears the deadline; aborts the handler's signal with reason, or as Connect does when a call completes. */
  protected end(reason?: unknown): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.rejectHandler = undefined;
    if (this.controller !== undefined || reason !== undefined) this.abort(reason);
    // A signal made after the call ended is born aborted.
    else this.aborted = true;
  }
}

/** A gRPC unary call (application/grpc, one length-prefixed message each way, status in trailers). */
export class UnaryCall extends FastUnaryCall {
  readonly protocolName = "grpc";
  private length = -1;

  protected readHeaders(): { timeoutMs?: number; error?: ConnectError } {
    const timeout = this.headers["grpc-timeout"];
    return timeout === undefined ? {} : parseTimeout(String(timeout), Number.MAX_SAFE_INTEGER);
  }

  protected check(): void {
    if (this.length < 0 && this.size >= 5) {
      const head = (this.first as Buffer).length >= 5 ? (this.first as Buffer) : this.joined();
      if (((head[0] as number) & 1) === 1) {
        const message = "received compressed envelope, but do not know how to decompress";
        this.answerError(new ConnectError(message, Code.Internal));
        return;
      }
      this.length = head.readUInt32BE(1);
      const max = this.options.readMaxBytes;
      if (this.length > max) {
        const message = `message size ${this.length} is larger than configured readMaxBytes ${max}`;
        this.answerError(new ConnectError(message, Code.ResourceExhausted));
        return;
      }
    }
    if (this.length >= 0 && this.size > 5 + this.length) {
      const message = "protocol error: received extra input message for unary method";
      this.answerError(new ConnectError(message, Code.Unimplemented));
    }
  }

  protected decode(body: Buffer | undefined): Message {
    if (body === undefined || this.size === 0) {
      throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
    }
    if (this.length < 0 || this.size < 5 + this.length) {
      throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    }
    try {
      return fromBinary(this.route.method.input, body.subarray(5, 5 + this.length));
    } catch (error) {
      throw new ConnectError(`parse binary: ${errorText(error)}`, Code.Internal);
    }
  }

  protected startHeader(): Headers {
    return new Headers();
  }

  protected answer(res: UnaryResponse): void {
    if (this.phase === DONE) return;
    let bytes: Uint8Array;
    try {
      bytes = toBinary(this.route.method.output, res.message);
    } catch (error) {
      this.answerError(new ConnectError(`serialize binary: ${errorText(error)}`, Code.Internal));
      return;
    }
    this.phase = DONE;
    this.end();
    if (this.stream.destroyed) return;
    const frame = Buffer.allocUnsafe(5 + bytes.length);
    frame[0] = 0;
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    const trailer = toNodeHeaders(res.trailer, {});
    trailer["grpc-status"] = grpcStatusOk;
    this.send(toNodeHeaders(res.header, responseHead()), trailer, frame);
  }

  protected answerError(error: ConnectError): void {
    if (this.phase === DONE) return;
    const reading = this.phase === READING;
    this.phase = DONE;
    this.end(reading ? undefined : error);
    const stream = this.stream;
    if (stream.destroyed) return;
    const trailer = setTrailerStatus(this.responseTrailer ?? new Headers(), error);
    const head = this.responseHeader ? toNodeHeaders(this.responseHeader, responseHead()) : responseHead();
    this.send(head, toNodeHeaders(trailer, {}), undefined);
    if (!stream.readableEnded) closeWhenAnswered(stream);
  }

  private send(head: OutgoingHttpHeaders, trailer: OutgoingHttpHeaders, frame: Buffer | undefined): void {
    const stream = this.stream;
    try {
      stream.respond(head, { waitForTrailers: true });
    } catch {
      // Headers Node refuses (connection-specific ones set by a handler): answer without them.
      if (stream.headersSent || stream.destroyed) return;
      stream.respond(responseHead(), { waitForTrailers: true });
    }
    stream.on("wantTrailers", () => stream.sendTrailers(trailer));
    stream.end(frame);
  }
}

// Made by a helper rather than assigned to a name: tsx (esbuild keepNames) would wrap a named one per call.
function innermost(call: FastUnaryCall): AnyFn {
  return (req) => call.invoke(req as UnaryRequest);
}

function responseHead(): OutgoingHttpHeaders {
  return { ":status": 200, "content-type": "application/grpc+proto" };
}

/** Copies fetch headers into a node:http2 header object. */
export function toNodeHeaders(headers: Headers, target: OutgoingHttpHeaders): OutgoingHttpHeaders {
  headers.forEach((value, key) => {
    target[key] = value;
  });
  return target;
}

/** error as a ConnectError: itself, or an internal error caused by it. */
export function toConnectError(error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  return new ConnectError("internal error", Code.Internal, undefined, undefined, error);
}

/** The message of error, whatever was thrown. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Ends a stream whose answer went out while the client was still sending (an oversized message, an
 * early error): RST_STREAM NO_ERROR once END_STREAM is sent, as gRPC servers do, so the client stops.
 */
export function closeWhenAnswered(stream: ServerHttp2Stream): void {
  // Node has no event for "END_STREAM sent", and an earlier RST would overtake queued frames.
  const timer = setInterval(() => {
    if (stream.destroyed) {
      clearInterval(timer);
    } else if (stream.state.localClose) {
      clearInterval(timer);
      stream.close(constants.NGHTTP2_NO_ERROR);
    }
  }, 10);
  timer.unref();
}
