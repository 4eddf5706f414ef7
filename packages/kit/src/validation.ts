import type { DescMessage, Message } from "@bufbuild/protobuf";
import { hasOption } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator, type Validator, type Violation, violationsToProto } from "@bufbuild/protovalidate";
import {
  field as fieldRules,
  message as messageRules,
  oneof as oneofRules,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, type Interceptor, type StreamRequest } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";

/**
 * A server interceptor that checks every request message against its protovalidate rules before the
 * handler runs. A violating request fails with invalid_argument carrying one `buf.validate.Violations`
 * detail (one entry per violated rule, with field paths); rules that do not compile fail with internal.
 */
export function createValidationInterceptor(validator: Validator = createValidator()): Interceptor {
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
