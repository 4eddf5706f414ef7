import { type FieldPath, ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "@trellis/gen/google/rpc/error_details_pb.js";

/** An error as the console shows it: one sentence, and messages next to the fields they concern. */
export interface Problem {
  readonly code: Code;
  /** The sentence for the form or page. */
  readonly message: string;
  /** Field path (proto names, e.g. "price.currency", "items[0].quantity") to what is wrong with it. */
  readonly fields: ReadonlyMap<string, string>;
  /** For resource_exhausted: how long to wait, in seconds. */
  readonly retryAfterSeconds?: number;
  /** The caller was aborted (navigation, unmount): show nothing. */
  readonly aborted: boolean;
}

/** The dotted proto path of a violation's field ("" for a message-level rule). */
export function fieldPathText(path: FieldPath | undefined): string {
  if (!path) return "";
  return path.elements
    .map((e) => {
      const sub = e.subscript;
      switch (sub.case) {
        case "index":
        case "intKey":
        case "uintKey":
          return `${e.fieldName}[${sub.value}]`;
        case "boolKey":
          return `${e.fieldName}[${sub.value}]`;
        case "stringKey":
          return `${e.fieldName}["${sub.value}"]`;
        default:
          return e.fieldName;
      }
    })
    .join(".");
}

function retryAfter(error: ConnectError): number | undefined {
  const header = Number(error.metadata.get("retry-after"));
  if (Number.isFinite(header) && header > 0) return Math.ceil(header);
  const info = error.findDetails(RetryInfoSchema)[0];
  if (info?.retryDelay) {
    const seconds = Number(info.retryDelay.seconds) + info.retryDelay.nanos / 1e9;
    if (seconds > 0) return Math.ceil(seconds);
  }
  return undefined;
}

// Server messages of these codes are written for people (e.g. "MFA is already on"); others are not.
const readable = new Set([Code.FailedPrecondition, Code.AlreadyExists, Code.NotFound, Code.OutOfRange]);

/** Turns anything thrown by a call into a Problem. */
export function describeError(error: unknown): Problem {
  const err = ConnectError.from(error);
  const base = { code: err.code, fields: new Map<string, string>(), aborted: false };
  switch (err.code) {
    case Code.Canceled:
      return { ...base, message: "Cancelled.", aborted: true };
    case Code.InvalidArgument: {
      const fields = new Map<string, string>();
      const general: string[] = [];
      for (const detail of err.findDetails(ViolationsSchema)) {
        for (const v of detail.violations) {
          const path = fieldPathText(v.field);
          const text = sentence(v.message || v.ruleId);
          if (path && !fields.has(path)) fields.set(path, text);
          else if (!path) general.push(text);
        }
      }
      const message =
        general.length > 0
          ? `Please check the form. ${general.join(" ")}`
          : fields.size > 0
            ? "Please correct the highlighted fields."
            : err.rawMessage || "The request was not valid.";
      return { ...base, fields, message };
    }
    case Code.ResourceExhausted: {
      const seconds = retryAfter(err);
      const message =
        seconds === undefined
          ? "Too many requests. Slow down and try again shortly."
          : `Too many requests. Slow down and try again in ${seconds} s.`;
      return seconds === undefined ? { ...base, message } : { ...base, message, retryAfterSeconds: seconds };
    }
    case Code.Unauthenticated:
      return { ...base, message: "Your session has ended. Please sign in again." };
    case Code.PermissionDenied:
      return { ...base, message: "You don't have permission to do that." };
    case Code.Unavailable:
      return { ...base, message: "The service is unavailable right now. Try again in a moment." };
    case Code.DeadlineExceeded:
      return { ...base, message: "That took too long. Try again." };
    default:
      if (readable.has(err.code) && err.rawMessage) return { ...base, message: sentence(err.rawMessage) };
      return { ...base, message: "Something went wrong on our side. Try again later." };
  }
}

function sentence(text: string): string {
  const t = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(t) ? t : `${t}.`;
}
