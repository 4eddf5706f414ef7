import type { IncomingHttpHeaders } from "node:http2";
import type { DescMethodUnary, DescService, Message } from "@bufbuild/protobuf";
import type { ContextValues, HandlerContext, UnaryRequest } from "@connectrpc/connect";

// The Connect-shaped objects of a fast-path call. Their costly parts are made only when read: an
// AbortSignal costs more than the rest of a call, and object literals with getters are slow.

/** The parts of a call its request and handler context read on demand. */
export interface CallState {
  /** "grpc" or "connect", as Connect's HandlerContext names the protocol. */
  readonly protocolName: string;
  /** The handler's signal, made on first use. */
  signal(): AbortSignal;
  /** Milliseconds left before the deadline, undefined without one. */
  remaining(): number | undefined;
}

/** A UnaryRequest as Connect's server makes it, with the signal made when first read. */
export class CallRequest implements UnaryRequest {
  readonly stream = false;
  readonly requestMethod = "POST";
  readonly #call: CallState;

  constructor(
    readonly service: DescService,
    readonly method: DescMethodUnary,
    readonly url: string,
    readonly header: Headers,
    readonly contextValues: ContextValues,
    readonly message: Message,
    call: CallState,
  ) {
    this.#call = call;
  }

  get signal(): AbortSignal {
    return this.#call.signal();
  }
}

/** The HandlerContext Connect gives a handler for req (its signal, header and values), signal made when read. */
export class CallContext implements HandlerContext {
  readonly protocolName: string;
  readonly method: DescMethodUnary;
  readonly service: DescService;
  readonly requestMethod: string;
  readonly requestHeader: Headers;
  readonly values: ContextValues;
  readonly url: string;
  readonly timeoutMs: () => number | undefined;
  readonly #req: UnaryRequest;
  readonly #call: CallState;

  constructor(
    req: UnaryRequest,
    call: CallState,
    readonly responseHeader: Headers,
    readonly responseTrailer: Headers,
  ) {
    this.protocolName = call.protocolName;
    this.method = req.method;
    this.service = req.service;
    this.requestMethod = req.requestMethod;
    this.requestHeader = req.header;
    this.values = req.contextValues;
    this.url = req.url;
    this.timeoutMs = () => call.remaining();
    this.#req = req;
    this.#call = call;
  }

  get signal(): AbortSignal {
    // An interceptor that passed on a copy ({ ...req }) dropped the getter: fall back to the call's.
    return this.#req.signal ?? this.#call.signal();
  }
}

const raw = Symbol("node headers not yet copied");

/**
 * A request's headers as a fetch Headers, read straight from Node's header object (pseudo-headers
 * left out) and copied into the Headers only when something iterates or changes them.
 */
export class RequestHeaders extends Headers {
  // Most calls only get() a few headers: copying all of them (with validation) costs more than the call.
  [raw]: IncomingHttpHeaders | undefined;

  constructor(headers: IncomingHttpHeaders) {
    super();
    this[raw] = headers;
  }
}

const base = Headers.prototype;
const proto = RequestHeaders.prototype as unknown as Record<PropertyKey, unknown>;

// Set on the prototype: Node's Headers typings declare its methods as properties.
proto.get = function get(this: RequestHeaders, name: string): string | null {
  const headers = this[raw];
  if (headers === undefined) return base.get.call(this, name);
  const key = name.toLowerCase();
  if (key.charCodeAt(0) === 58) return null;
  const value = headers[key];
  if (value === undefined) return null;
  return typeof value === "string" ? value : value.join(", ");
};

proto.has = function has(this: RequestHeaders, name: string): boolean {
  return this.get(name) !== null;
};

for (const name of [
  "set",
  "append",
  "delete",
  "getSetCookie",
  "forEach",
  "entries",
  "keys",
  "values",
] as const) {
  const method = base[name] as (...args: unknown[]) => unknown;
  proto[name] = function copyFirst(this: RequestHeaders, ...args: unknown[]) {
    copy(this);
    return method.apply(this, args);
  };
}
proto[Symbol.iterator] = proto.entries;

function copy(target: RequestHeaders): void {
  const headers = target[raw];
  if (headers === undefined) return;
  target[raw] = undefined;
  for (const key in headers) {
    if (key.charCodeAt(0) === 58) continue; // ":path" and the other pseudo-headers
    const value = headers[key];
    if (typeof value === "string") base.append.call(target, key, value);
    else if (value !== undefined) for (const item of value) base.append.call(target, key, item);
  }
}
