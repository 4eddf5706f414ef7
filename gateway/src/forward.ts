import type {
  DescMessage,
  DescMethod,
  DescMethodStreaming,
  DescMethodUnary,
  MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { isIdempotent } from "@trellis/kit/client.js";
import { requestIdKey } from "@trellis/kit/context.js";
import { type Instance, type InstancePool, isConnectionFailure, wasNotSent } from "./balancer.js";
import { forwardedForKey } from "./context.js";
import type { RoutedService } from "./routes.js";

/** How calls are sent upstream. */
export interface ForwardOptions {
  /** Deadline of calls whose client named none, ms. */
  readonly defaultTimeoutMs: number;
  /** Longest deadline passed on, ms; longer ones are cut to it. */
  readonly maxTimeoutMs: number;
  /** Most instances one call is tried on (default 3). */
  readonly maxAttempts?: number;
  /** Counts each resend to another instance. */
  readonly onRetry?: (pool: string, method: DescMethod) => void;
  /** Pass the caller's traceparent on as it came (when the gateway records no spans of its own). */
  readonly passTraceContext?: boolean;
}

// Request headers passed through as they are; authorization carries the user's token.
const passedHeaders = ["authorization", "user-agent", "x-user-agent", "accept-language"];

// Response headers that belong to the hop (protocol, framing), never copied back.
const hopHeaders = new Set([
  "content-type",
  "content-length",
  "content-encoding",
  "accept-encoding",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "date",
  "server",
  "te",
  "trailer",
  "vary",
  "traceparent",
  "tracestate",
]);

function isHopHeader(name: string): boolean {
  return (
    hopHeaders.has(name) || name.startsWith("grpc-") || name.startsWith("connect-") || name.startsWith(":")
  );
}

function copyEndToEnd(from: Headers | undefined, to: Headers): void {
  from?.forEach((value, name) => {
    if (!isHopHeader(name)) to.append(name, value);
  });
}

const traceHeaders = ["traceparent", "tracestate"];

function upstreamHeaders(ctx: HandlerContext, passTrace: boolean): Headers {
  const header = new Headers();
  for (const name of passTrace ? [...passedHeaders, ...traceHeaders] : passedHeaders) {
    const value = ctx.requestHeader.get(name);
    if (value !== null) header.set(name, value);
  }
  const requestId = ctx.values.get(requestIdKey);
  if (requestId) header.set("x-request-id", requestId);
  const forwardedFor = ctx.values.get(forwardedForKey);
  if (forwardedFor) header.set("x-forwarded-for", forwardedFor);
  return header;
}

/** What the client sees of an upstream failure: the service's own answer, or unavailable. */
export function toClientError(error: unknown): ConnectError {
  if (isConnectionFailure(error)) {
    return new ConnectError("upstream unavailable", Code.Unavailable, undefined, undefined, error);
  }
  if (!(error instanceof ConnectError)) return ConnectError.from(error);
  const metadata = new Headers();
  copyEndToEnd(error.metadata, metadata);
  const out = new ConnectError(error.rawMessage, error.code, metadata, undefined, error);
  out.details = error.details;
  return out;
}

/**
 * The upstream error as the balancer should judge it: a stream cancelled underneath a call the
 * client did not cancel (the instance's connection died) is a connection failure, not Canceled.
 */
function upstreamError(error: unknown, signal: AbortSignal): unknown {
  if (error instanceof ConnectError && error.code === Code.Canceled && !signal.aborted) {
    return new ConnectError("upstream dropped the call", Code.Unavailable, undefined, undefined, error);
  }
  return error;
}

/** Sends calls of one upstream's methods to its instances, balancing and retrying. */
export function createForwarder(pool: InstancePool, options: ForwardOptions) {
  const maxAttempts = options.maxAttempts ?? 3;
  const passTrace = options.passTraceContext === true;

  const timeoutOf = (ctx: HandlerContext) =>
    Math.min(ctx.timeoutMs() ?? options.defaultTimeoutMs, options.maxTimeoutMs);

  /** Runs attempt on instances until one answers, retrying connection failures where safe. */
  async function withRetries<T>(
    method: DescMethod,
    ctx: HandlerContext,
    attempt: (instance: Instance, timeoutMs: number) => Promise<T>,
    release: (instance: Instance, value: T | undefined) => boolean,
  ): Promise<T> {
    const deadline = Date.now() + timeoutOf(ctx);
    const tried = new Set<Instance>();
    const idempotent = isIdempotent(method);
    for (let n = 1; ; n++) {
      const instance = pool.pick(tried);
      if (!instance) throw new ConnectError("upstream unavailable", Code.Unavailable);
      tried.add(instance);
      instance.inFlight++;
      let value: T | undefined;
      try {
        value = await attempt(instance, Math.max(1, deadline - Date.now()));
        pool.record(instance, undefined);
        return value;
      } catch (raw) {
        const error = upstreamError(raw, ctx.signal);
        pool.record(instance, error);
        const retry =
          n < maxAttempts &&
          !ctx.signal.aborted &&
          deadline - Date.now() > 1 &&
          isConnectionFailure(error) &&
          (idempotent || wasNotSent(error));
        if (!retry) throw toClientError(error);
        options.onRetry?.(pool.name, method);
      } finally {
        if (release(instance, value)) instance.inFlight--;
      }
    }
  }

  const unary =
    (method: DescMethodUnary) =>
    async (input: MessageShape<DescMessage>, ctx: HandlerContext): Promise<MessageShape<DescMessage>> => {
      const header = upstreamHeaders(ctx, passTrace);
      const res = await withRetries(
        method,
        ctx,
        (instance, timeoutMs) => instance.transport.unary(method, ctx.signal, timeoutMs, header, input),
        () => true,
      );
      copyEndToEnd(res.header, ctx.responseHeader);
      copyEndToEnd(res.trailer, ctx.responseTrailer);
      return res.message;
    };

  const serverStreaming = (method: DescMethodStreaming) =>
    async function* (input: MessageShape<DescMessage>, ctx: HandlerContext) {
      const header = upstreamHeaders(ctx, passTrace);
      let owner: Instance | undefined;
      // The stream is retried only until its response headers arrive; it holds its instance until it ends.
      const res = await withRetries(
        method,
        ctx,
        (instance, timeoutMs) => {
          owner = instance;
          return instance.transport.stream(method, ctx.signal, timeoutMs, header, single(input));
        },
        (_instance, value) => value === undefined,
      );
      try {
        copyEndToEnd(res.header, ctx.responseHeader);
        for await (const message of res.message) yield message;
        copyEndToEnd(res.trailer, ctx.responseTrailer);
      } catch (error) {
        throw toClientError(upstreamError(error, ctx.signal));
      } finally {
        if (owner) owner.inFlight--;
      }
    };

  const clientStreams = (method: DescMethodStreaming) =>
    async function* (input: AsyncIterable<MessageShape<DescMessage>>, ctx: HandlerContext) {
      const instance = pool.pick();
      if (!instance) throw new ConnectError("upstream unavailable", Code.Unavailable);
      instance.inFlight++;
      let failure: unknown;
      try {
        const res = await instance.transport.stream(
          method,
          ctx.signal,
          timeoutOf(ctx),
          upstreamHeaders(ctx, passTrace),
          input,
        );
        copyEndToEnd(res.header, ctx.responseHeader);
        for await (const message of res.message) yield message;
        copyEndToEnd(res.trailer, ctx.responseTrailer);
      } catch (error) {
        failure = upstreamError(error, ctx.signal);
        throw toClientError(failure);
      } finally {
        instance.inFlight--;
        pool.record(instance, failure);
      }
    };

  return { unary, serverStreaming, clientStreams };
}

async function* single<T>(value: T): AsyncIterable<T> {
  yield value;
}

/**
 * Registers each routed method on router with an implementation that forwards it to its
 * upstream; methods not routed (internal ones) are not registered, so they answer not found.
 */
export function registerForwarding(
  router: ConnectRouter,
  services: readonly RoutedService[],
  pools: Readonly<Record<string, InstancePool>>,
  options: ForwardOptions,
): void {
  for (const service of services) {
    const pool = pools[service.upstream];
    if (!pool) throw new Error(`no instances configured for ${service.upstream}`);
    const forwarder = createForwarder(pool, options);
    for (const method of service.methods) {
      switch (method.methodKind) {
        case "unary":
          router.rpc(method, forwarder.unary(method as DescMethodUnary) as never);
          break;
        case "server_streaming":
          router.rpc(method, forwarder.serverStreaming(method as DescMethodStreaming) as never);
          break;
        case "client_streaming": {
          const stream = forwarder.clientStreams(method as DescMethodStreaming);
          router.rpc(method, (async (
            input: AsyncIterable<MessageShape<DescMessage>>,
            ctx: HandlerContext,
          ) => {
            let last: MessageShape<DescMessage> | undefined;
            for await (const message of stream(input, ctx)) last = message;
            if (!last) throw new ConnectError("upstream sent no response", Code.Internal);
            return last;
          }) as never);
          break;
        }
        case "bidi_streaming":
          router.rpc(method, forwarder.clientStreams(method as DescMethodStreaming) as never);
          break;
      }
    }
  }
}
