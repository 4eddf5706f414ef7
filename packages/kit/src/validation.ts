import type { DescMessage, Message } from "@bufbuild/protobuf";
import { hasOption } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator, type Validator, type Violation, violationsToProto } from "@bufbuild/protovalidate";
import {
  field as fieldRules,
  message as messageRules,
  oneof as oneofRules,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { RE2JS } from "@bufbuild/re2";
import { Code, ConnectError, type Interceptor, type StreamRequest } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";

/** The protovalidate validator the kit checks requests with (regular expressions as RE2 matches them). */
export function createKitValidator(): Validator {
  return createValidator({ regexMatch });
}

/**
 * A server interceptor that checks every request message against its protovalidate rules before the
 * handler runs. A violating request fails with invalid_argument carrying one `buf.validate.Violations`
 * detail (one entry per violated rule, with field paths); rules that do not compile fail with internal.
 */
export function createValidationInterceptor(validator: Validator = createKitValidator()): Interceptor {
  // Per schema: does it (or anything it contains) declare a rule? Most messages don't, and
  // skipping them avoids protovalidate's per-call reflection and cursor setup.
  const ruled = new WeakMap<DescMessage, boolean>();
  const check = (schema: DescMessage, message: Message): void => {
    let has = ruled.get(schema);
    if (has === undefined) {
      has = hasRules(schema, new Set());
      ruled.set(schema, has);
    }
    if (!has) return;
    const result = validator.validate(schema, message);
    if (result.kind === "valid") return;
    if (result.kind === "invalid") throw invalidArgument(result.violations);
    throw new ConnectError("internal error", Code.Internal, undefined, undefined, result.error);
  };

  const checkStream = async (next: Parameters<Interceptor>[0], req: StreamRequest) => {
    const schema = req.method.input;
    if (req.method.methodKind === "server_streaming") {
      // The single request is read up front so a bad one never reaches the handler.
      const messages: Message[] = [];
      for await (const m of req.message) {
        check(schema, m);
        messages.push(m);
      }
      return next({ ...req, message: createAsyncIterable(messages) });
    }
    // Client and bidi streams are checked message by message as the handler reads them.
    const source = req.message;
    async function* checked() {
      for await (const m of source) {
        check(schema, m);
        yield m;
      }
    }
    return next({ ...req, message: checked() });
  };

  return (next) => (req) => {
    if (req.stream) return checkStream(next, req);
    try {
      check(req.method.input, req.message);
    } catch (error) {
      return Promise.reject(error);
    }
    return next(req);
  };
}

/** The invalid_argument error for the given violations: a short message and a Violations detail. */
function invalidArgument(violations: readonly Violation[]): ConnectError {
  const listed = violations.map((v) => `${pathToString(v.field) || "(message)"}: ${v.message}`).join("; ");
  const [proto, desc] = violationsToProto([...violations]);
  return new ConnectError(`invalid request: ${listed}`, Code.InvalidArgument, undefined, [
    { desc, value: proto },
  ]);
}

function hasRules(schema: DescMessage, seen: Set<DescMessage>): boolean {
  if (seen.has(schema)) return false;
  seen.add(schema);
  if (hasOption(schema, messageRules)) return true;
  if (schema.oneofs.some((o) => hasOption(o, oneofRules))) return true;
  for (const f of schema.fields) {
    if (hasOption(f, fieldRules)) return true;
    // Message, list-of-message and map-of-message fields: their element type may carry rules.
    if (f.message && hasRules(f.message, seen)) return true;
  }
  return false;
}

const matchers = new Map<string, (text: string) => boolean>();

/**
 * protovalidate's regex hook for `pattern` rules and CEL `matches()`: the platform RegExp where a
 * pattern is one it runs like RE2, in linear time (see {@link runsLikeRe2}), and RE2 itself
 * (protovalidate's default engine, about three times slower here) for anything else. Each pattern
 * is compiled once; the cache is bounded like protovalidate's own.
 */
export function regexMatch(pattern: string, text: string): boolean {
  let match = matchers.get(pattern);
  if (match === undefined) {
    if (matchers.size >= 1024) matchers.clear();
    if (runsLikeRe2(pattern)) {
      const re = new RegExp(pattern, "u");
      match = (t) => re.test(t);
    } else {
      const re = RE2JS.compile(pattern);
      match = (t) => re.test(t);
    }
    matchers.set(pattern, match);
  }
  return match(text);
}

/**
 * Whether the platform RegExp reads pattern as RE2 does and cannot backtrack exponentially on it:
 * it compiles as a JavaScript regex, uses no syntax whose meaning differs or that backtracks
 * (backreferences, lookaround, inline flags and named groups, \A \z \Q \p, POSIX classes), and
 * no quantified group holds a quantifier or alternatives itself (the `(a+)+` and `(a|a)*` shapes).
 */
export function runsLikeRe2(pattern: string): boolean {
  if (/\\[1-9kpPQEzAbB]|\(\?(?!:)|\[\[:/.test(pattern)) return false;
  try {
    new RegExp(pattern, "u");
  } catch {
    return false;
  }
  const groups: boolean[] = [false]; // per open group: does it hold a quantifier or a |?
  let lastGroupQuantified = false; // the atom just read is a group holding a quantifier
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      i++;
      lastGroupQuantified = false;
    } else if (c === "[") {
      // Skip the class: a leading ] or ^] is literal, escapes skip a character.
      i++;
      if (pattern[i] === "^") i++;
      if (pattern[i] === "]") i++;
      while (i < pattern.length && pattern[i] !== "]") i += pattern[i] === "\\" ? 2 : 1;
      lastGroupQuantified = false;
    } else if (c === "(") {
      groups.push(false);
      if (pattern[i + 1] === "?") i += 2; // (?: — the only group modifier let through above
    } else if (c === ")") {
      const held = groups.pop() ?? false;
      lastGroupQuantified = held;
      if (held) groups[groups.length - 1] = true;
    } else if (c === "|") {
      // A quantified group of alternatives backtracks like one holding a quantifier: (a|a)*.
      groups[groups.length - 1] = true;
      lastGroupQuantified = false;
    } else if (c === "*" || c === "+" || c === "?" || c === "{") {
      if (lastGroupQuantified) return false;
      groups[groups.length - 1] = true;
      if (c === "{") i = pattern.indexOf("}", i);
      if (pattern[i + 1] === "?") i++; // lazy
    } else {
      lastGroupQuantified = false;
    }
  }
  return true;
}
