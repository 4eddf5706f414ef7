import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { apiErrorCode } from "@trellis/kit/nats.js";
import {
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
  nanos,
  RetentionPolicy,
  StorageType,
} from "nats";
import type { Logger } from "pino";
import { type BatchConsumer, startBatchConsumer } from "./batch-consumer.ts";
import { createDomainRegistry, domainEventToInput } from "./domain-events.ts";
import type { EventInput } from "./model.ts";
import { type AnalyticsStore, type RowBlock, toRowBlocks } from "./store.ts";

/** Options for {@link createIngest}. */
export interface IngestOptions {
  readonly nats: NatsConnection;
  readonly store: Pick<AnalyticsStore, "insertBlocks">;
  /** The durable buffer of accepted client events (default ANALYTICS_INGEST). */
  readonly stream?: string;
  /** Its subject (default analytics.ingest.events). */
  readonly subject?: string;
  /** Durable consumer name (default analytics). */
  readonly durable?: string;
  /** Bound of the buffer: accepted but not yet written messages and bytes (defaults 100 000, 1 GiB). */
  readonly maxBufferedMessages?: number;
  readonly maxBufferedBytes?: number;
  /** The message format accept writes (default v2, row blocks; v1 for a rolling upgrade from a v1-only release). */
  readonly format?: "v1" | "v2";
  readonly batchEvents?: number;
  readonly flushIntervalMs?: number;
  readonly ackWaitMs?: number;
  /** Streams of the other services (AUTH, BILLING, CORE) whose events are stored too (default none). */
  readonly domainStreams?: readonly string[];
  readonly logger?: Pick<Logger, "warn" | "error">;
}

/** The ingestion pipeline: accept() makes events durable, start() writes them to ClickHouse. */
export interface Ingest {
  /** Creates or updates the ingest stream. */
  ensureStream(): Promise<void>;
  /** Validates and durably buffers events (all of one tenant); answers once JetStream stored them. */
  accept(events: readonly EventInput[]): Promise<void>;
  /** Starts the consumers of the ingest stream and of the domain streams. */
  start(): Promise<void>;
  /** Stops consuming after flushing what is held. */
  stop(): Promise<void>;
}

// JetStream answers these when a stream with DiscardPolicy.New is full.
const STREAM_FULL = new Set([10077, 10047, 10027]);

// Messages of the ingest stream. Version 2 (written now): a JSON header line
// {"v":2,"tenant":…,"ids":[…]} and then the block's JSONEachRow rows, checked and serialized once
// at accept, passed to ClickHouse as they are. Version 1 (still read, from older instances):
// {"v":1,"events":[EventInput…]}.
interface EnvelopeV1 {
  readonly v: 1;
  readonly events: readonly EventInput[];
}
interface BlockHeader {
  readonly v: 2;
  readonly tenant: string;
  readonly ids: readonly string[];
}

/** The row blocks of one ingest-stream message (either version); throws if it is not one. */
export function decodeIngestMessage(data: Uint8Array): RowBlock[] {
  const text = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const end = text.indexOf(0x0a);
  const head = JSON.parse(text.toString("utf8", 0, end === -1 ? text.length : end)) as
    | EnvelopeV1
    | BlockHeader;
  if (head.v === 1 && Array.isArray(head.events)) return toRowBlocks(head.events);
  // The store checks the block's shape (one row line per id) before it inserts anything.
  if (head.v === 2 && typeof head.tenant === "string" && Array.isArray(head.ids) && end !== -1) {
    return [{ tenantId: head.tenant, ids: head.ids, body: text.subarray(end + 1) }];
  }
  throw new Error("not an ingest message");
}

// A version 1 message with the events of block (looked up by id among events).
function encodeV1(block: RowBlock, events: readonly EventInput[]): Uint8Array {
  const wanted = new Set(block.ids);
  const picked = events.filter((e) => e.tenantId === block.tenantId && wanted.delete(e.eventId));
  const envelope: EnvelopeV1 = { v: 1, events: picked };
  return Buffer.from(JSON.stringify(envelope));
}

/** An ingest-stream message (version 2) carrying block. */
export function encodeIngestMessage(block: RowBlock): Uint8Array {
  const header: BlockHeader = { v: 2, tenant: block.tenantId, ids: block.ids };
  return Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), block.body]);
}

/** The ingestion pipeline over one NATS connection and store. */
export function createIngest(o: IngestOptions): Ingest {
  const stream = o.stream ?? "ANALYTICS_INGEST";
  const subject = o.subject ?? "analytics.ingest.events";
  const durable = o.durable ?? "analytics";
  const js: JetStreamClient = o.nats.jetstream();
  let jsm: JetStreamManager | undefined;
  const consumers: BatchConsumer[] = [];
  const manager = async () => {
    jsm ??= await o.nats.jetstreamManager();
    return jsm;
  };

  let stopped = false;
  async function retryUntilStarted(name: string, start: () => Promise<BatchConsumer>): Promise<void> {
    for (let attempt = 0; !stopped; attempt++) {
      try {
        const consumer = await start();
        if (stopped) await consumer.stop();
        else consumers.push(consumer);
        return;
      } catch (error) {
        // Once, not every 2 s: a stream of a service that is not deployed may never appear.
        if (attempt === 0)
          o.logger?.warn(
            { err: error, stream: name },
            "analytics: domain stream not consumable yet, retrying",
          );
        await new Promise((resolve) => setTimeout(resolve, 2000).unref());
      }
    }
  }

  async function publish(data: Uint8Array, msgID: string): Promise<void> {
    try {
      await js.publish(subject, data, { msgID, timeout: 5000 });
    } catch (error) {
      const code = apiErrorCode(error);
      if (code !== undefined && STREAM_FULL.has(code)) {
        throw new ConnectError(
          "ingestion buffer is full, retry later",
          Code.ResourceExhausted,
          undefined,
          undefined,
          error,
        );
      }
      throw new ConnectError("ingestion buffer unavailable", Code.Unavailable, undefined, undefined, error);
    }
  }

  return {
    async ensureStream() {
      const config = {
        subjects: [subject],
        retention: RetentionPolicy.Workqueue,
        discard: DiscardPolicy.New,
        storage: StorageType.File,
        max_msgs: o.maxBufferedMessages ?? 100_000,
        max_bytes: o.maxBufferedBytes ?? 1024 ** 3,
        duplicate_window: nanos(120_000),
      };
      const m = await manager();
      const info = await m.streams.info(stream).catch(() => undefined);
      if (info) await m.streams.update(stream, { ...info.config, ...config });
      else await m.streams.add({ name: stream, ...config });
    },
    async accept(events) {
      if (events.length === 0) return;
      const blocks = toRowBlocks(events);
      // One message per request keeps a batch all-or-none; a message too large for the server
      // is split, and a client retry of the whole batch is harmless (ids are counted once).
      const maxPayload = Math.max(64 * 1024, (o.nats.info?.max_payload ?? 1024 * 1024) - 4096);
      for (const block of blocks) {
        for (const chunk of splitBlock(block, maxPayload)) {
          // The same events accepted twice within the duplicate window are stored once by JetStream.
          const hash = createHash("sha256");
          for (const id of chunk.ids) hash.update(`${chunk.tenantId}\n${id}\n`);
          const data = o.format === "v1" ? encodeV1(chunk, events) : encodeIngestMessage(chunk);
          await publish(data, hash.digest("hex"));
        }
      }
    },
    async start() {
      const m = await manager();
      const common = {
        js,
        jsm: m,
        store: o.store,
        batchEvents: o.batchEvents,
        flushIntervalMs: o.flushIntervalMs,
        ackWaitMs: o.ackWaitMs,
        logger: o.logger,
      };
      consumers.push(
        await startBatchConsumer({
          ...common,
          stream,
          durable,
          filterSubject: subject,
          decode: (msg: JsMsg) => decodeIngestMessage(msg.data),
        }),
      );
      const registry = createDomainRegistry();
      stopped = false;
      for (const domainStream of o.domainStreams ?? []) {
        // Another service's stream may not exist yet: keep trying until it does.
        void retryUntilStarted(domainStream, () =>
          startBatchConsumer({
            ...common,
            stream: domainStream,
            durable,
            decode: (msg: JsMsg) => {
              const headers: Record<string, string> = {};
              for (const key of msg.headers?.keys() ?? []) headers[key] = msg.headers?.get(key) ?? "";
              const storedAtMs = Math.floor(msg.info.timestampNanos / 1e6);
              if (!msg.subject.startsWith("trellis.")) return [];
              const input = domainEventToInput(
                registry,
                { subject: msg.subject, headers, data: msg.data, storedAtMs },
                Date.now(),
              );
              return input ? toRowBlocks([input]) : [];
            },
          }),
        );
      }
    },
    async stop() {
      stopped = true;
      await Promise.all(consumers.splice(0).map((c) => c.stop()));
    },
  };
}

// block in pieces whose message (header and rows) fits in maxBytes; a row larger than that goes alone.
function splitBlock(block: RowBlock, maxBytes: number): RowBlock[] {
  // The header is {"v":2,"tenant":"…","ids":[…]}: a few bytes, the tenant, each id quoted.
  const base = 40 + Buffer.byteLength(block.tenantId);
  const idBytes = block.ids.map((id) => Buffer.byteLength(id) + 3);
  if (base + block.body.byteLength + idBytes.reduce((a, b) => a + b, 0) <= maxBytes) return [block];
  const body = Buffer.from(block.body.buffer, block.body.byteOffset, block.body.byteLength);
  const pieces: RowBlock[] = [];
  const cut = (from: number, to: number, fromByte: number, toByte: number) =>
    pieces.push({
      tenantId: block.tenantId,
      ids: block.ids.slice(from, to),
      body: body.subarray(fromByte, toByte),
    });
  let firstRow = 0;
  let firstByte = 0;
  let size = base;
  let at = 0;
  for (let i = 0; i < block.ids.length; i++) {
    const end = body.indexOf(0x0a, at) + 1;
    const rowBytes = end - at + (idBytes[i] as number);
    if (i > firstRow && size + rowBytes > maxBytes) {
      cut(firstRow, i, firstByte, at);
      firstRow = i;
      firstByte = at;
      size = base;
    }
    size += rowBytes;
    at = end;
  }
  cut(firstRow, block.ids.length, firstByte, body.byteLength);
  return pieces;
}
