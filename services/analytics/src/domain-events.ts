import {
  createRegistry,
  type DescMessage,
  fromBinary,
  type Registry,
  ScalarType,
  toJsonString,
} from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { file_trellis_auth_v1_events } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { file_trellis_billing_v1_events } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { file_trellis_core_v1_events } from "@trellis/gen/trellis/core/v1/events_pb.js";
import type { EventInput } from "./model.ts";

/** Every domain event type of the other services, for decoding by `ce-type`. */
export function createDomainRegistry(): Registry {
  return createRegistry(
    file_trellis_auth_v1_events,
    file_trellis_billing_v1_events,
    file_trellis_core_v1_events,
  );
}

const KEY = /^[a-zA-Z][a-zA-Z0-9_.:-]{0,63}$/;

interface Flat {
  props: Record<string, string>;
  numProps: Record<string, number>;
}

// Fields become queryable properties under their proto names, nested messages joined with '.':
// total.amount_minor (number), total.currency (text), status (the enum value's name), times as
// RFC 3339 text, map<string, …> entries as key.entry. Lists stay in the JSON payload only.
function flatten(
  schema: DescMessage,
  message: Record<string, unknown>,
  prefix: string,
  out: Flat,
  depth: number,
): void {
  for (const field of schema.fields) {
    const key = `${prefix}${field.name}`;
    const value = message[field.localName];
    if (value === undefined || !KEY.test(key)) continue;
    if (field.fieldKind === "scalar") {
      if (field.scalar === ScalarType.STRING) out.props[key] = String(value).slice(0, 1024);
      else if (field.scalar === ScalarType.BOOL) out.props[key] = String(value);
      else if (field.scalar !== ScalarType.BYTES) out.numProps[key] = Number(value);
    } else if (field.fieldKind === "enum") {
      out.props[key] = field.enum.values.find((v) => v.number === value)?.name ?? String(value);
    } else if (field.fieldKind === "message") {
      if (field.message.typeName === "google.protobuf.Timestamp") {
        out.props[key] = timestampDate(value as Timestamp).toISOString();
      } else if (depth < 3) {
        flatten(field.message, value as Record<string, unknown>, `${key}.`, out, depth + 1);
      }
    } else if (field.fieldKind === "map" && field.mapKind !== "message") {
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (KEY.test(`${key}.${k}`)) out.props[`${key}.${k}`] = String(v).slice(0, 1024);
      }
    }
  }
}

/** What the domain consumer knows about one message besides its body. */
export interface DomainMessage {
  readonly subject: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly data: Uint8Array;
  /** When the stream stored it, Unix milliseconds (fallback for a missing ce-time). */
  readonly storedAtMs: number;
}

/**
 * A domain event as a stored event: name = subject, tenant and user from the body, id from
 * `ce-id`, body as protobuf JSON plus flattened properties. Undefined for a message that cannot
 * be attributed to a tenant (unknown type, no tenant_id): such messages are skipped.
 */
export function domainEventToInput(
  registry: Registry,
  m: DomainMessage,
  nowMs: number,
): EventInput | undefined {
  const schema = registry.getMessage(m.headers["ce-type"] ?? "");
  const id = m.headers["ce-id"] ?? m.headers["Nats-Msg-Id"];
  if (!schema || !id) return undefined;
  const message = fromBinary(schema, m.data) as unknown as Record<string, unknown>;
  const tenantId = typeof message.tenantId === "string" ? message.tenantId : "";
  if (tenantId === "") return undefined;
  const flat: Flat = { props: {}, numProps: {} };
  flatten(schema, message, "", flat, 0);
  const ceTime = Date.parse(m.headers["ce-time"] ?? "");
  const timeMs = Number.isFinite(ceTime) ? ceTime : m.storedAtMs;
  return {
    tenantId,
    eventId: id,
    name: m.subject,
    source: "domain",
    userId: typeof message.userId === "string" ? message.userId : "",
    timeMs,
    receivedAtMs: nowMs,
    props: flat.props,
    numProps: flat.numProps,
    payload: toJsonString(schema, message as never),
  };
}
