import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerMessages,
  DeliverPolicy,
  headers as emptyHeaders,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
  nanos,
} from "nats";
import type { Logger } from "pino";
import type postgres from "postgres";
import type { Db } from "./db.js";
import { headersToRecord } from "./events.js";
import { apiErrorCode } from "./nats.js";

/** An event as a handler sees it. */
export interface ReceivedEvent {
  /** Event id (`ce-id`), the inbox key. */
  readonly id: string;
  /** Protobuf full type name (`ce-type`). */
  readonly type: string;
  /** Producer (`ce-source`, `trellis/<service>`). */
  readonly source: string;
  readonly subject: string;
  /** The binary Protobuf body; see {@link decodeEvent}. */
  readonly data: Uint8Array;
  /** All message headers (first value of each), including `traceparent`. */
  readonly headers: Readonly<Record<string, string>>;
  /** When the event happened (`ce-time`). */
  readonly time: Date;
  /** 1 on first delivery. */
  readonly deliveryCount: number;
}

/** Applies an event's effect inside the transaction that also records it in the inbox. */
export type EventHandler = (
  tx: postgres.TransactionSql<{ bigint: bigint }>,
  event: ReceivedEvent,
) => Promise<void>;

/** Options for {@link startConsumer}. */
export interface ConsumerOptions {
  readonly nats: NatsConnection;
  readonly sql: Db;
  readonly stream: string;
  /** Durable consumer name; also the inbox's consumer key. */
  readonly durable: string;
  readonly filterSubjects: readonly string[];
  readonly handler: EventHandler;
  /** Deliveries before a failing event is dead-lettered (default 5). */
  readonly maxDeliver?: number;
  /** Time a delivery may stay unacknowledged before redelivery (default 30 s). */
  readonly ackWaitMs?: number;
  /** Redelivery delay after a failure: doubles from retryDelayMs up to maxRetryDelayMs (defaults 1 s, 60 s). */
  readonly retryDelayMs?: number;
  readonly maxRetryDelayMs?: number;
  /**
   * Where dead letters go; default `deadletter.<original subject>`. It must be captured by a
   * stream other than the source stream (or the consumer would read its own dead letters).
   */
  readonly deadLetterSubject?: (subject: string) => string;
  /** Messages pulled per request (default 32). */
  readonly batch?: number;
  readonly logger?: Pick<Logger, "debug" | "info" | "warn" | "error">;
}

/** A running consumer. */
export interface EventConsumer {
  /** Unprocessed and unacknowledged messages, for metrics. */
  lag(): Promise<{ pending: number; ackPending: number }>;
  /** Stops pulling and waits for the message in hand to finish. */
  stop(): Promise<void>;
}

/** Header naming why a message was dead-lettered. */
export const DEAD_LETTER_ERROR_HEADER = "trellis-error";

/** Decodes an event body, checking that `ce-type` names the schema. */
export function decodeEvent<Desc extends DescMessage>(
  schema: Desc,
  event: ReceivedEvent,
): MessageShape<Desc> {
  if (event.type && event.type !== schema.typeName) {
    throw new Error(`event ${event.id} is a ${event.type}, not a ${schema.typeName}`);
  }
  return fromBinary(schema, event.data);
}

// Failures of the database connection itself, not of the handler: retried without counting
// toward dead-lettering, so a database outage does not empty the stream into the dead-letter subject.
const TRANSIENT = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);
function isTransient(error: unknown): boolean {
  const code = String((error as { code?: unknown } | undefined)?.code ?? "");
  return TRANSIENT.has(code) || code.startsWith("ECONN") || code.startsWith("08") || code === "57P01";
}

const CONSUMER_NOT_FOUND = 10014;

// Creates the durable or brings an existing one (a restart, another instance) up to date.
async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  config: Partial<ConsumerConfig>,
): Promise<void> {
  try {
    await jsm.consumers.info(stream, durable);
  } catch (error) {
    if (apiErrorCode(error) !== CONSUMER_NOT_FOUND) throw error;
    try {
      await jsm.consumers.add(stream, config);
      return;
    } catch (addError) {
      // Another instance created it first; fall through to the update.
      const exists = await jsm.consumers.info(stream, durable).then(
        () => true,
        () => false,
      );
      if (!exists) throw addError;
    }
  }
  const { durable_name: _name, ack_policy: _ack, deliver_policy: _deliver, ...updatable } = config;
  await jsm.consumers.update(stream, durable, updatable);
}

/**
 * Runs a durable pull consumer with explicit ack. Each event is recorded in the inbox and handled
 * in one transaction, then acknowledged, so a redelivered event is applied once. A failing event
 * is retried with backoff and, after maxDeliver deliveries, published to the dead-letter subject
 * with an error header and terminated.
 */
export async function startConsumer(options: ConsumerOptions): Promise<EventConsumer> {
  const { nats, sql, stream, durable, handler, logger } = options;
  const maxDeliver = options.maxDeliver ?? 5;
  const retryDelay = options.retryDelayMs ?? 1000;
  const maxRetryDelay = options.maxRetryDelayMs ?? 60_000;
  const deadLetterSubject = options.deadLetterSubject ?? ((subject: string) => `deadletter.${subject}`);
  const jsm = await nats.jetstreamManager();
  const js = nats.jetstream();

  const filters = [...options.filterSubjects];
  const config: Partial<ConsumerConfig> = {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(options.ackWaitMs ?? 30_000),
    // Unlimited on the server: the consumer itself dead-letters after maxDeliver, so an event is
    // never silently dropped when dead-lettering fails for a while.
    max_deliver: -1,
    // Servers before 2.10 know only one filter subject.
    ...(filters.length === 1 ? { filter_subject: filters[0] } : { filter_subjects: filters }),
  };
  await ensureConsumer(jsm, stream, durable, config);
  const consumer = await js.consumers.get(stream, durable);

  const delayFor = (attempt: number) => Math.min(maxRetryDelay, retryDelay * 2 ** Math.min(attempt - 1, 20));

  const deadLetter = async (msg: JsMsg, event: ReceivedEvent, error: unknown) => {
    const headers = msg.headers ?? emptyHeaders();
    const reason = error instanceof Error ? error.message : String(error);
    headers.set(DEAD_LETTER_ERROR_HEADER, reason.replace(/[\r\n]+/g, " ").slice(0, 1024) || "error");
    headers.set("trellis-consumer", durable);
    headers.set("trellis-original-subject", msg.subject);
    headers.set("trellis-deliveries", String(event.deliveryCount));
    // One dead letter per consumer and event, however often this step is retried.
    await js.publish(deadLetterSubject(msg.subject), msg.data, { headers, msgID: `${durable}:${event.id}` });
  };

  const handle = async (msg: JsMsg) => {
    const headers = headersToRecord(msg.headers);
    const ceTime = headers["ce-time"];
    const event: ReceivedEvent = {
      id: headers["ce-id"] ?? headers["Nats-Msg-Id"] ?? `${msg.info.stream}:${msg.seq}`,
      type: headers["ce-type"] ?? "",
      source: headers["ce-source"] ?? "",
      subject: msg.subject,
      data: msg.data,
      headers,
      time: ceTime ? new Date(ceTime) : new Date(msg.info.timestampNanos / 1e6),
      deliveryCount: msg.info.deliveryCount,
    };
    try {
      const applied = await sql.begin(async (tx) => {
        const fresh = await tx`insert into inbox (consumer, event_id) values (${durable}, ${event.id})
          on conflict do nothing returning 1`;
        if (fresh.length === 0) return false;
        await handler(tx, event);
        return true;
      });
      msg.ack();
      if (!applied) logger?.debug({ consumer: durable, eventId: event.id }, "duplicate event skipped");
    } catch (error) {
      const log = { err: error, consumer: durable, eventId: event.id, deliveries: event.deliveryCount };
      if (isTransient(error) || event.deliveryCount < maxDeliver) {
        logger?.warn(log, "event handling failed; will retry");
        msg.nak(delayFor(event.deliveryCount));
        return;
      }
      try {
        await deadLetter(msg, event, error);
        msg.term();
        logger?.error(log, "event dead-lettered");
      } catch (dlqError) {
        logger?.error({ ...log, dlqError }, "dead-lettering failed; will retry");
        msg.nak(maxRetryDelay);
      }
    }
  };

  let stopped = false;
  let messages: ConsumerMessages | undefined;
  const run = async () => {
    while (!stopped) {
      try {
        messages = await consumer.consume({ max_messages: options.batch ?? 32 });
        if (stopped) await messages.close();
        for await (const msg of messages) await handle(msg);
        if (stopped) return;
        logger?.warn({ consumer: durable }, "consumer iterator ended; restarting");
      } catch (error) {
        if (stopped) return;
        logger?.warn({ err: error, consumer: durable }, "consumer interrupted; restarting");
      }
      await new Promise((r) => setTimeout(r, retryDelay));
    }
  };
  const running = run();

  return {
    async lag() {
      const info = await jsm.consumers.info(stream, durable);
      return { pending: info.num_pending, ackPending: info.num_ack_pending };
    },
    async stop() {
      stopped = true;
      await messages?.close();
      await running;
    },
  };
}
