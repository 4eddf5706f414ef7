import { randomBytes } from "node:crypto";
import { type DescMessage, getOption, hasOption } from "@bufbuild/protobuf";
import { event } from "@trellis/gen/trellis/common/v1/options_pb.js";
import { type MsgHdrs, headers as natsHeaders } from "nats";

/** Writes trace context (W3C `traceparent`, `tracestate`) into a header carrier. */
export type InjectTrace = (headers: Record<string, string>) => void;

/** CloudEvents spec version carried in `ce-specversion`. */
export const CE_SPEC_VERSION = "1.0";

/** Content type of every event body: the binary Protobuf encoding of the event message. */
export const EVENT_CONTENT_TYPE = "application/protobuf";

/** A time-ordered UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits. */
export function uuidv7(nowMs: number = Date.now()): string {
  const b = randomBytes(16);
  b.writeUIntBE(nowMs, 0, 6);
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x70;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The subject declared by the message option `(trellis.common.v1.event).subject`; throws if absent. */
export function eventSubject(schema: DescMessage): string {
  let subject = subjects.get(schema);
  if (subject === undefined) {
    subject = hasOption(schema, event) ? getOption(schema, event).subject : "";
    if (!subject) {
      throw new Error(
        `${schema.typeName} is not an event: it has no (trellis.common.v1.event).subject option`,
      );
    }
    subjects.set(schema, subject);
  }
  return subject;
}
// Reading an option decodes it each time; an outbox write per RPC asks for the same few.
const subjects = new WeakMap<DescMessage, string>();

/** The CloudEvents `ce-source` of a Trellis service. */
export function eventSource(service: string): string {
  return `trellis/${service}`;
}

/** What identifies one event on the wire. */
export interface EventEnvelope {
  /** Event id (UUIDv7): `ce-id` and `Nats-Msg-Id`. */
  readonly id: string;
  /** Protobuf full type name: `ce-type`. */
  readonly type: string;
  /** Producing service, rendered as `trellis/<service>`: `ce-source`. */
  readonly service: string;
  /** When the event happened: `ce-time`. */
  readonly time: Date;
  /** Extra headers (e.g. `traceparent`); the CloudEvents ones win on a clash. */
  readonly extra?: Readonly<Record<string, string>>;
}

/** NATS headers per the CloudEvents NATS binding, plus `Nats-Msg-Id` = event id for de-duplication. */
export function eventHeaders(envelope: EventEnvelope): MsgHdrs {
  const h = natsHeaders();
  for (const [key, value] of Object.entries(envelope.extra ?? {})) h.set(key, value);
  h.set("ce-specversion", CE_SPEC_VERSION);
  h.set("ce-id", envelope.id);
  h.set("ce-type", envelope.type);
  h.set("ce-source", eventSource(envelope.service));
  h.set("ce-time", envelope.time.toISOString());
  h.set("content-type", EVENT_CONTENT_TYPE);
  h.set("Nats-Msg-Id", envelope.id);
  return h;
}

/** Extra headers for a new event: the caller's, plus trace context when injectTrace is given. */
export function extraHeaders(headers?: Readonly<Record<string, string>>, injectTrace?: InjectTrace) {
  const extra: Record<string, string> = { ...headers };
  injectTrace?.(extra);
  return extra;
}

/** Flattens NATS headers into a record (first value of each key). */
export function headersToRecord(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const key of h.keys()) out[key] = h.get(key);
  return out;
}
