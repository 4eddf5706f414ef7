import { openSync } from "node:fs";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { context, isSpanContextValid, trace } from "@opentelemetry/api";
import {
  type Bindings,
  type ChildLoggerOptions,
  type DestinationStream,
  type Level,
  type Logger,
  pino,
  stdSerializers,
} from "pino";
import { callerServiceKey, principalKey, requestIdKey } from "./context.js";
import { observingInterceptor, type RpcObserver, rpcCodeName, rpcMethodName } from "./metrics.js";

export type { Logger } from "pino";

/** Options of createLogger. */
export interface LoggerOptions {
  /** The service name, written on every line as `service`. */
  readonly service: string;
  /** The lowest level written (pino level names, or "silent"); "info" by default. */
  readonly level?: Level | "silent";
  /** Where lines go; stdout by default. Tests pass a stream they read. */
  readonly destination?: DestinationStream;
}

const REDACTED = "[REDACTED]";

// Keys whose values are secrets wherever they appear, however deep.
const sensitiveKey =
  /authorization|cookie|password|passwd|secret|token|api[-_]?key|private[-_]?key|credential|recovery[-_]?code|totp/i;

// Bearer credentials and JWT-shaped strings inside free text (error messages, log messages).
const bearerText = /\b(Bearer|Basic)\s+[A-Za-z0-9\-._~+/]+=*/gi;
const jwtText = /\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g;

// Whether the two replacements below can match at all: "Bearer" and "Basic" have a B, "eyJ" a J
// (ids and hex never do); only then one pass for the words.
const credentialHint = /Bearer|Basic|eyJ/;

/** Replaces bearer credentials and JWT-shaped substrings of text by a marker. */
export function scrubText(text: string): string {
  if ((!text.includes("B") && !text.includes("J")) || !credentialHint.test(text)) return text;
  return text.replace(bearerText, `$1 ${REDACTED}`).replace(jwtText, REDACTED);
}

/** A copy of value with every secret-named key's value and every token-shaped text redacted. */
export function scrubSecrets(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return scrubText(value);
  if (value === null || typeof value !== "object" || depth > 8) return value;
  if (Array.isArray(value)) return value.map((item) => scrubSecrets(item, depth + 1));
  if (value instanceof Error) return scrubSecrets(stdSerializers.errWithCause(value), depth);
  if (value instanceof Uint8Array || value instanceof Date) return value;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    out[key] = sensitiveKey.test(key) ? REDACTED : scrubSecrets(child, depth + 1);
  }
  return out;
}

/** The active span's ids, as log fields; empty outside a trace. */
function traceFields(): Record<string, string> {
  const span = trace.getSpan(context.active());
  if (!span) return {};
  const ids = span.spanContext();
  return isSpanContextValid(ids) ? { trace_id: ids.traceId, span_id: ids.spanId } : {};
}

/**
 * A pino JSON logger stamped with `service` and the active trace and span ids, which never writes
 * an authorization header, cookie, password, secret or token, at any depth or inside message text.
 */
export function createLogger(options: LoggerOptions): Logger {
  const errSerializer = (error: unknown) => scrubSecrets(error);
  const logger = pino(
    {
      level: options.level ?? "info",
      base: { service: options.service },
      timestamp: createIsoTime(),
      serializers: { err: errSerializer, error: errSerializer, cause: errSerializer },
      formatters: {
        level: (label) => ({ level: label }),
        log: createLineScrubber(),
      },
      mixin: traceFields,
      hooks: {
        logMethod(args, method) {
          // Copy the arguments only when a message text carries a credential.
          for (const arg of args) {
            if (typeof arg === "string" && scrubText(arg) !== arg) {
              const cleaned = args.map((a) => (typeof a === "string" ? scrubText(a) : a));
              return method.apply(this, cleaned as Parameters<typeof method>);
            }
          }
          return method.apply(this, args);
        },
      },
    },
    options.destination ?? createLogDestination(),
  );
  return scrubbingBindings(logger);
}

/** How long a log line may wait in the destination's buffer before it is written anyway. */
export const logFlushIntervalMs = 250;

/**
 * pino's asynchronous destination (sonic-boom) writing to dest (a file descriptor or a path; stdout
 * by default), tuned for a line per RPC: lines are written in batches of 32 KiB, or every
 * logFlushIntervalMs when fewer come, and at exit; each line is encoded to bytes once, as it is
 * written. Untuned, every event loop turn pays for a write of its own through libuv's thread pool,
 * and sonic-boom's text mode measures its whole pending text again on every line (Buffer.byteLength
 * of a concatenated string copies it): together about three quarters of a log line's cost.
 */
export function createLogDestination(dest: number | string = 1): ReturnType<typeof pino.destination> {
  const stream = pino.destination({
    // A file is opened here, so that lines logged right before an exit are written too.
    dest: typeof dest === "string" ? openSync(dest, "a") : dest,
    sync: false,
    contentMode: "buffer",
    minLength: 32 * 1024,
    maxWrite: 128 * 1024,
    periodicFlush: logFlushIntervalMs,
  });
  // Buffer mode takes bytes; pino hands over text.
  const writeBytes = stream.write as unknown as (this: typeof stream, bytes: Buffer) => boolean;
  stream.write = (line: string) => writeBytes.call(stream, Buffer.from(line, "utf8"));
  return stream;
}

// pino's isoTime, the string kept for the millisecond it was made in (many lines share one).
function createIsoTime(): () => string {
  let last = 0;
  let text = "";
  return () => {
    const now = Date.now();
    if (now !== last) {
      last = now;
      text = `,"time":"${new Date(now).toISOString()}"`;
    }
    return text;
  };
}

// Lines are scrubbed by scrubSecrets; most (all keys harmless, all values plain) need no copy.
function createLineScrubber(): (object: Record<string, unknown>) => Record<string, unknown> {
  const verdicts = new Map<string, boolean>();
  const sensitive = (key: string) => {
    let verdict = verdicts.get(key);
    if (verdict === undefined) {
      verdict = sensitiveKey.test(key);
      if (verdicts.size < 10_000) verdicts.set(key, verdict);
    }
    return verdict;
  };
  return (object) => {
    for (const key in object) {
      const value = object[key];
      const clean =
        !sensitive(key) &&
        (typeof value === "string"
          ? scrubText(value) === value
          : value === null || typeof value !== "object");
      if (!clean) return scrubSecrets(object) as Record<string, unknown>;
    }
    return object;
  };
}

// Child loggers' bindings (and what their own serializers make) are scrubbed like log lines.
function scrubbingBindings(logger: Logger): Logger {
  type Child = (this: Logger, bindings: Bindings, options?: ChildLoggerOptions) => Logger;
  const child = logger.child as unknown as Child;
  const setBindings = logger.setBindings;
  logger.child = function scrubbedChild(this: Logger, bindings: Bindings, childOptions?: ChildLoggerOptions) {
    const serializers = childOptions?.serializers;
    const options = serializers
      ? {
          ...childOptions,
          serializers: Object.fromEntries(
            Object.entries(serializers).map(([key, serialize]) => [
              key,
              (value: unknown) => scrubSecrets(serialize(value)),
            ]),
          ),
        }
      : childOptions;
    return child.call(this, scrubSecrets(bindings) as Bindings, options);
  } as unknown as Logger["child"];
  logger.setBindings = function scrubbedSetBindings(this: Logger, bindings: Bindings) {
    setBindings.call(this, scrubSecrets(bindings) as Bindings);
  };
  return logger;
}

// Codes that mean the server failed: logged at error level with the cause.
const serverFailures = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);
// Codes that mean a dependency or capacity problem rather than a bad request.
const degraded = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.ResourceExhausted,
  Code.Unimplemented,
]);

/** The generic message every internal failure is answered with; the cause stays in the log. */
export const internalErrorMessage = "internal error";

/**
 * The error the client should see for error: ConnectErrors as thrown, except that internal and
 * unknown failures and anything that is not a ConnectError get a generic message (cause kept).
 */
export function toPublicError(error: unknown, signal?: AbortSignal): ConnectError {
  if (error instanceof ConnectError) {
    if (!serverFailures.has(error.code) || error.rawMessage === internalErrorMessage) return error;
    return new ConnectError(
      internalErrorMessage,
      error.code,
      error.metadata,
      undefined,
      error.cause ?? error,
    );
  }
  // A handler that failed because its call was cancelled or ran out of time reports that, not a fault.
  if (signal?.aborted && signal.reason instanceof ConnectError) return signal.reason;
  return new ConnectError(internalErrorMessage, Code.Internal, undefined, undefined, error);
}

/**
 * A server interceptor writing one line per RPC — method, code, duration_ms, trace and request
 * ids, calling service, user and tenant, never a message body or credential — and turning
 * internal failures into a generic error for the client, logging their cause at error level.
 */
export function createLoggingInterceptor(logger: Logger): Interceptor {
  return observingInterceptor(createLoggingObserver(logger));
}

/** What the logging interceptor does around each RPC, as an observer. */
export function createLoggingObserver(logger: Logger): RpcObserver {
  // One child logger per method, so the method name is serialized once, not on every line.
  const perMethod = new Map<object, Logger>();
  return (req) => {
    const start = performance.now();
    let methodLogger = perMethod.get(req.method);
    if (methodLogger === undefined) {
      methodLogger = logger.child({ method: rpcMethodName(req) });
      perMethod.set(req.method, methodLogger);
    }
    const log = methodLogger;
    return (error) => {
      const failure = error === undefined ? undefined : toPublicError(error, req.signal);
      const principal = req.contextValues.get(principalKey);
      const line: Record<string, unknown> = {
        code: rpcCodeName(failure?.code),
        duration_ms: Math.round((performance.now() - start) * 1000) / 1000,
        request_id: req.contextValues.get(requestIdKey) || undefined,
        peer_service: req.contextValues.get(callerServiceKey),
        user_id: principal?.userId,
        tenant_id: principal?.tenantId,
      };
      if (!failure) {
        log.info(line, "rpc");
      } else if (serverFailures.has(failure.code)) {
        log.error({ ...line, err: failure.cause ?? error }, "rpc failed");
      } else {
        line.error = failure.rawMessage;
        if (degraded.has(failure.code)) log.warn(line, "rpc failed");
        else log.info(line, "rpc failed");
      }
      return failure;
    };
  };
}
