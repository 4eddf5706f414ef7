import { Code, ConnectError } from "@connectrpc/connect";
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  nanos,
} from "nats";
import type { Logger } from "pino";
import type { AnalyticsStore, RowBlock } from "./store.ts";

/** Options for {@link startBatchConsumer}. */
export interface BatchConsumerOptions {
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly stream: string;
  readonly durable: string;
  /** Subjects consumed; unset for the whole stream. */
  readonly filterSubject?: string;
  readonly store: Pick<AnalyticsStore, "insertBlocks">;
  /** Turns one message into checked row blocks; [] acknowledges and skips it. Throwing terminates it (poison). */
  readonly decode: (msg: JsMsg) => RowBlock[];
  /** Flush when this many events are buffered (default 5000). */
  readonly batchEvents?: number;
  /** Flush at most this long after the first buffered message (default 500 ms). */
  readonly flushIntervalMs?: number;
  /** Unacknowledged time before JetStream redelivers (default 30 s). */
  readonly ackWaitMs?: number;
  readonly logger?: Pick<Logger, "warn" | "error">;
}

/** A running consumer: stop() stops pulling, flushes what it holds and returns. */
export interface BatchConsumer {
  stop(): Promise<void>;
}

/**
 * Pulls from a durable consumer and writes events to the store in batches, acknowledging each
 * message only after its events are in ClickHouse: a crash before the ack means redelivery, and
 * the store drops the ids it already holds, so nothing is lost or counted twice.
 */
export async function startBatchConsumer(o: BatchConsumerOptions): Promise<BatchConsumer> {
  const batchEvents = o.batchEvents ?? 5000;
  const flushIntervalMs = o.flushIntervalMs ?? 500;
  await o.jsm.consumers
    .add(o.stream, {
      durable_name: o.durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ...(o.filterSubject ? { filter_subject: o.filterSubject } : {}),
      ack_wait: nanos(o.ackWaitMs ?? 30_000),
      max_ack_pending: 100_000,
    })
    .catch(async (error) => {
      // It exists already (another instance, an earlier run): keep it, its position is the point.
      await o.jsm.consumers.info(o.stream, o.durable).catch(() => {
        throw error;
      });
    });
  const consumer = await o.js.consumers.get(o.stream, o.durable);
  const messages: ConsumerMessages = await consumer.consume({ max_messages: 1000 });
  let held: { msg: JsMsg; blocks: RowBlock[] }[] = [];
  let heldEvents = 0;
  let timer: NodeJS.Timeout | undefined;
  let flushing: Promise<void> = Promise.resolve();
  let failures = 0;

  const writeOut = async (batch: typeof held) => {
    const blocks = batch.flatMap((b) => b.blocks);
    try {
      await o.store.insertBlocks(blocks);
      failures = 0;
      for (const b of batch) b.msg.ack();
    } catch (error) {
      if (error instanceof ConnectError && error.code === Code.InvalidArgument && batch.length > 1) {
        // One bad message must not hold back the rest: write them one by one.
        for (const b of batch) await writeOut([b]);
        return;
      }
      if (error instanceof ConnectError && error.code === Code.InvalidArgument) {
        o.logger?.error(
          { err: error, subject: batch[0]?.msg.subject },
          "analytics: dropping an invalid message",
        );
        batch[0]?.msg.term();
        return;
      }
      failures += 1;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(failures, 6));
      o.logger?.warn({ err: error, delay }, "analytics: insert failed, redelivering later");
      for (const b of batch) b.msg.nak(delay);
    }
  };
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    const batch = held;
    held = [];
    heldEvents = 0;
    const previous = flushing;
    flushing = previous.then(() => (batch.length > 0 ? writeOut(batch) : undefined));
    return { previous, done: flushing };
  };

  const loop = (async () => {
    for await (const msg of messages) {
      let blocks: RowBlock[];
      try {
        blocks = o.decode(msg);
      } catch (error) {
        o.logger?.error({ err: error, subject: msg.subject }, "analytics: undecodable message");
        msg.term();
        continue;
      }
      held.push({ msg, blocks });
      for (const block of blocks) heldEvents += block.ids.length;
      // A full batch waits only for the write before it: the next batch is read while this one
      // is written, and at most two batches are held.
      if (heldEvents >= batchEvents) await flush().previous;
      else if (!timer) timer = setTimeout(() => void flush(), flushIntervalMs);
    }
  })();

  return {
    async stop() {
      messages.stop();
      await loop;
      await flush().done;
    },
  };
}
