import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type postgres from "postgres";
import { eventSubject, extraHeaders, type InjectTrace, uuidv7 } from "./events.js";

/** The channel the outbox NOTIFYs on commit so the relay publishes at once instead of at its next poll. */
export const OUTBOX_CHANNEL = "trellis_outbox";

/** Options for {@link enqueue}. */
export interface EnqueueOptions {
  /** Subject override (tests use unique prefixes); default: the message's event option. */
  readonly subject?: string;
  /** Event id override; default: a new UUIDv7. */
  readonly id?: string;
  /** Extra headers published with the event. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Writes the current trace context (traceparent) into the headers. */
  readonly injectTrace?: InjectTrace;
  /** NOTIFY the relay on commit (default true). */
  readonly notify?: boolean;
}

/**
 * Writes an event to the outbox inside the caller's transaction, so it is published if and only
 * if the transaction commits. Returns the event id.
 */
export async function enqueue<Desc extends DescMessage>(
  tx: postgres.TransactionSql<{ bigint: bigint }> | postgres.TransactionSql,
  schema: Desc,
  message: MessageShape<Desc>,
  options: EnqueueOptions = {},
): Promise<string> {
  const id = options.id ?? uuidv7();
  const subject = options.subject ?? eventSubject(schema);
  const headers = extraHeaders(options.headers, options.injectTrace);
  const payload = Buffer.from(toBinary(schema, message));
  const sql = tx as postgres.TransactionSql;
  const insert = sql`insert into outbox (id, subject, type, payload, headers)
    values (${id}, ${subject}, ${schema.typeName}, ${payload}, ${sql.json(headers)})`;
  if (options.notify ?? true) {
    // Delivered only on commit; identical notifications in one transaction fold into one. Issued
    // with the insert, so postgres.js pipelines both: one round trip, not two.
    await Promise.all([insert, sql`select pg_notify(${OUTBOX_CHANNEL}, '')`]);
  } else {
    await insert;
  }
  return id;
}
