import { fromBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { SessionRevokedSchema } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { eventSubject } from "@trellis/kit/events.js";
import { maxAccessTokenLifetimeSec } from "@trellis/kit/tokens.js";
import { DeliverPolicy, type NatsConnection } from "nats";
import type { Logger } from "pino";

/** Sessions whose access tokens must be refused, each until its last token expires. */
export interface RevocationList {
  isRevoked(sessionId: string): boolean;
  /** Denies sessionId until untilMs (epoch ms). */
  add(sessionId: string, untilMs: number): void;
  /** Forgets sessions whose tokens have all expired. */
  sweep(): void;
  readonly size: number;
}

/** Creates an empty revocation list reading time from now (tests inject a clock). */
export function createRevocationList(now: () => number = Date.now): RevocationList {
  const denied = new Map<string, number>();
  return {
    isRevoked(sessionId) {
      const until = denied.get(sessionId);
      return until !== undefined && until > now();
    },
    add(sessionId, untilMs) {
      if (untilMs <= now()) return;
      denied.set(sessionId, Math.max(untilMs, denied.get(sessionId) ?? 0));
    },
    sweep() {
      const at = now();
      for (const [sessionId, until] of denied) if (until <= at) denied.delete(sessionId);
    },
    get size() {
      return denied.size;
    },
  };
}

/** Options of startRevocationFeed. */
export interface RevocationFeedOptions {
  readonly nats: NatsConnection;
  /** The stream auth publishes to (AUTH). */
  readonly stream: string;
  readonly list: RevocationList;
  readonly logger: Logger;
  /** Wait before trying again when the stream cannot be read, ms (default 2000). */
  readonly retryMs?: number;
}

/** A running revocation feed. */
export interface RevocationFeed {
  /** True once the feed has attached to the stream (and stays true). */
  readonly attached: boolean;
  stop(): Promise<void>;
}

/**
 * Follows auth's trellis.auth.session.revoked events with an ephemeral ordered consumer of its
 * own (every gateway instance sees every event), starting one token lifetime back so a gateway
 * that starts late still knows the sessions revoked while their tokens can live.
 */
export function startRevocationFeed(options: RevocationFeedOptions): RevocationFeed {
  const { nats, list, logger } = options;
  const subject = eventSubject(SessionRevokedSchema);
  const retryMs = options.retryMs ?? 2000;
  let attached = false;
  let stopped = false;
  let failures = 0;
  let current: { close(): Promise<unknown> } | undefined;
  let wake: (() => void) | undefined;

  const run = async () => {
    while (!stopped) {
      try {
        const start = new Date(Date.now() - (maxAccessTokenLifetimeSec + 60) * 1000);
        const consumer = await nats.jetstream().consumers.get(options.stream, {
          // A single filter as a string: NATS servers before 2.10 reject filter_subjects.
          filterSubjects: subject,
          deliver_policy: DeliverPolicy.StartTime,
          opt_start_time: start.toISOString(),
        });
        const messages = await consumer.consume({ max_messages: 256 });
        current = messages;
        if (stopped) break;
        attached = true;
        failures = 0;
        logger.info({ stream: options.stream, subject }, "following session revocations");
        for await (const message of messages) {
          try {
            const event = fromBinary(SessionRevokedSchema, message.data);
            const until = event.accessTokensExpireAt
              ? timestampMs(event.accessTokensExpireAt)
              : Date.now() + maxAccessTokenLifetimeSec * 1000;
            list.add(event.sessionId, until);
          } catch (error) {
            logger.warn({ err: error, seq: message.seq }, "undecodable session.revoked event skipped");
          }
        }
      } catch (error) {
        if (stopped) break;
        // Until auth has created its stream this repeats: say it once, then quietly.
        const level = failures++ === 0 ? "warn" : "debug";
        logger[level]({ err: error, stream: options.stream }, "session revocation feed interrupted");
      }
      if (stopped) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, retryMs).unref();
      });
    }
  };
  const done = run();
  const sweeper = setInterval(() => list.sweep(), 30_000).unref();

  return {
    get attached() {
      return attached;
    },
    async stop() {
      stopped = true;
      clearInterval(sweeper);
      wake?.();
      await current?.close().catch(() => {});
      await done;
    },
  };
}
