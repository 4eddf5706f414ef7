import { setTimeout as sleep } from "node:timers/promises";
import type { JetStreamManager, NatsConnection, StreamState } from "nats";

/** Options for {@link createIngestProgress}. */
export interface IngestProgressOptions {
  readonly nats: NatsConnection;
  /** The ingest stream (a work queue: a message is deleted once its events are in ClickHouse). */
  readonly stream: string;
  /** Between two looks at the stream while waiting (default 100 ms). */
  readonly pollMs?: number;
}

/** Tells when the client events accepted so far, by any instance, have reached ClickHouse. */
export interface IngestProgress {
  /**
   * Resolves true once every event accepted before the call is in ClickHouse (its message was
   * acknowledged, so the work queue deleted it), false when deadlineMs (Unix ms) passes first,
   * the signal aborts, or the stream cannot be read.
   */
  settled(deadlineMs: number, signal?: AbortSignal): Promise<boolean>;
}

/**
 * Progress of the ingest stream, read from JetStream itself, so it is right across replicas.
 * Concurrent waiters (every WatchMetrics stream ticks on the same second) share one stream-info
 * request, but only one sent after they started waiting.
 */
export function createIngestProgress(o: IngestProgressOptions): IngestProgress {
  const pollMs = o.pollMs ?? 100;
  let jsm: Promise<JetStreamManager> | undefined;
  let current: { startedAt: number; promise: Promise<StreamState> } | undefined;

  const read = (notBefore: number): Promise<StreamState> => {
    if (current && current.startedAt >= notBefore) return current.promise;
    jsm ??= o.nats.jetstreamManager().catch((error) => {
      jsm = undefined;
      throw error;
    });
    const startedAt = performance.now();
    const promise: Promise<StreamState> = jsm
      .then((m) => m.streams.info(o.stream))
      .then((info) => info.state)
      .finally(() => {
        if (current?.promise === promise) current = undefined;
      });
    current = { startedAt, promise };
    return promise;
  };

  return {
    async settled(deadlineMs, signal) {
      try {
        let state = await read(performance.now());
        const target = state.last_seq;
        for (;;) {
          if (state.messages === 0 || state.first_seq > target) return true;
          if (Date.now() >= deadlineMs || signal?.aborted) return false;
          await sleep(Math.min(pollMs, Math.max(1, deadlineMs - Date.now())), undefined, { signal });
          state = await read(performance.now());
        }
      } catch {
        return false;
      }
    },
  };
}
