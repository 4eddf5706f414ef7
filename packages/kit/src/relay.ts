import type { JetStreamClient, NatsConnection } from "nats";
import type { Logger } from "pino";
import type { Db } from "./db.js";
import { eventHeaders } from "./events.js";
import { advisoryKey } from "./migrate.js";
import { ensureStream, natsCheck, type StreamSpec } from "./nats.js";
import { OUTBOX_CHANNEL } from "./outbox.js";

/** Options for {@link startRelay}. */
export interface RelayOptions {
  readonly sql: Db;
  readonly nats: NatsConnection;
  /** Producing service; becomes `ce-source: trellis/<service>`. */
  readonly service: string;
  readonly logger?: Pick<Logger, "debug" | "info" | "warn" | "error">;
  /** Rows per batch (default 100). */
  readonly batchSize?: number;
  /** Poll interval when no NOTIFY arrives (default 1000 ms). */
  readonly pollIntervalMs?: number;
  /** The stream to create or update before the first publish. */
  readonly stream?: StreamSpec;
  /** How long to wait for a PubAck (default 5000 ms). */
  readonly publishTimeoutMs?: number;
  /** Retry backoff after a failure: doubles from minBackoffMs up to maxBackoffMs (defaults 100 ms, 30 s). */
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** LISTEN for the outbox channel on a dedicated connection (default true; PGlite wants false). */
  readonly listen?: boolean;
  /** Sent rows older than this are deleted (default 24 h). */
  readonly retainSentMs?: number;
}

/** Outbox backlog, for metrics. */
export interface OutboxLag {
  /** Rows not yet published. */
  readonly pending: number;
  /** Age of the oldest unpublished row, 0 when none. */
  readonly oldestAgeMs: number;
}

/** A running relay. */
export interface Relay {
  /** Publishes everything committed so far; rejects if NATS refuses (rows stay for later). */
  flush(): Promise<void>;
  /** Current outbox backlog. */
  lag(): Promise<OutboxLag>;
  /** Stops polling and listening and waits for the batch in progress. */
  stop(): Promise<void>;
}

interface OutboxRow {
  id: string;
  subject: string;
  type: string;
  payload: Uint8Array;
  headers: Record<string, string>;
  created_at: Date;
}

const RELAY_LOCK = advisoryKey("trellis.outbox.relay");
const PURGE_EVERY_MS = 10 * 60_000;

/**
 * Publishes committed outbox rows to JetStream in order with `Nats-Msg-Id` = event id and marks
 * them sent. Wakes on NOTIFY, polls as a fallback, and backs off while NATS is unavailable; a
 * row published but not marked (crash) is published again and dropped by JetStream's de-duplication.
 */
export async function startRelay(options: RelayOptions): Promise<Relay> {
  const { sql, service, logger } = options;
  const batchSize = options.batchSize ?? 100;
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const timeout = options.publishTimeoutMs ?? 5000;
  const minBackoff = options.minBackoffMs ?? 100;
  const maxBackoff = options.maxBackoffMs ?? 30_000;
  const retainSentMs = options.retainSentMs ?? 24 * 3_600_000;
  const js: JetStreamClient = options.nats.jetstream();

  let streamReady = !options.stream;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let failures = 0;
  let lastPurge = 0;
  let timer: NodeJS.Timeout | undefined;

  const ensureStreamOnce = async () => {
    if (streamReady || !options.stream) return;
    await ensureStream(await options.nats.jetstreamManager(), options.stream);
    streamReady = true;
  };

  // Checked before a batch so an outage costs one failed round trip per retry, not a batch of
  // publishes buffered by the client and replayed on reconnect.
  const natsUp = natsCheck(options.nats, timeout);

  // One batch in one transaction. The transaction-scoped advisory lock lets one relay per
  // database work at a time, which keeps publish order; SKIP LOCKED keeps a second one from
  // ever touching rows in flight. Returns the number of rows read and the first publish error.
  const publishBatch = async (wait: boolean): Promise<{ rows: number; error?: unknown }> =>
    sql.begin(async (tx) => {
      const [lock] = wait
        ? await tx`select true as locked from (select pg_advisory_xact_lock(${RELAY_LOCK}::bigint)) l`
        : await tx`select pg_try_advisory_xact_lock(${RELAY_LOCK}::bigint) as locked`;
      if (!lock?.locked) return { rows: 0 };
      const rows = await tx<OutboxRow[]>`
        select id, subject, type, payload, headers, created_at from outbox
        where sent_at is null order by seq limit ${batchSize} for update skip locked`;
      if (rows.length === 0) return { rows: 0 };
      await natsUp();
      await ensureStreamOnce();
      // Pipelined: one connection keeps publish order, and we wait for all acks at once.
      const results = await Promise.allSettled(
        rows.map((row) =>
          js.publish(row.subject, row.payload, {
            msgID: row.id,
            timeout,
            headers: eventHeaders({
              id: row.id,
              type: row.type,
              service,
              time: row.created_at,
              extra: row.headers,
            }),
          }),
        ),
      );
      const sent = rows.filter((_, i) => results[i]?.status === "fulfilled").map((row) => row.id);
      if (sent.length > 0) await tx`update outbox set sent_at = now() where id = any(${sent}::text[])`;
      const failed = results.find((r) => r.status === "rejected");
      return { rows: rows.length, error: failed?.reason };
    });

  const drain = async (wait: boolean) => {
    for (;;) {
      const { rows, error } = await publishBatch(wait);
      if (error) throw error;
      if (rows < batchSize) return;
    }
  };

  const purge = async () => {
    if (Date.now() - lastPurge < PURGE_EVERY_MS) return;
    lastPurge = Date.now();
    await sql`delete from outbox where sent_at < now() - make_interval(secs => ${retainSentMs / 1000})`;
  };

  const schedule = (ms: number) => {
    clearTimeout(timer);
    if (stopped) return;
    timer = setTimeout(wake, ms);
    timer.unref();
  };

  const loop = async () => {
    do {
      again = false;
      try {
        await ensureStreamOnce();
        await drain(false);
        await purge();
        if (failures > 0) logger?.info({ service }, "outbox relay recovered");
        failures = 0;
      } catch (error) {
        failures++;
        const delay = Math.min(maxBackoff, minBackoff * 2 ** Math.min(failures - 1, 20));
        logger?.warn({ err: error, service, retryInMs: delay }, "outbox relay failed; retrying");
        schedule(delay);
        return;
      }
    } while (again && !stopped);
    schedule(pollIntervalMs);
  };

  function wake() {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = loop().finally(() => {
      running = undefined;
    });
  }

  let unlisten: (() => Promise<void>) | undefined;
  if (options.listen ?? true) {
    try {
      const listener = await sql.listen(OUTBOX_CHANNEL, () => wake());
      unlisten = listener.unlisten;
    } catch (error) {
      logger?.warn({ err: error, service }, "outbox relay cannot LISTEN; polling only");
    }
  }
  wake();

  return {
    async flush() {
      if (running) await running;
      await drain(true);
    },
    async lag() {
      const [row] = await sql<{ pending: number; oldest_age_ms: number }[]>`
        select count(*)::int as pending,
               coalesce(extract(epoch from now() - min(created_at)) * 1000, 0)::float8 as oldest_age_ms
        from outbox where sent_at is null`;
      return { pending: row?.pending ?? 0, oldestAgeMs: Math.max(0, row?.oldest_age_ms ?? 0) };
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await unlisten?.().catch(() => {});
      await running;
    },
  };
}
