import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type AnalyticsService,
  WatchMetricsResponseSchema,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import { durationMs } from "./convert.ts";
import type { IngestProgress } from "./ingest-progress.ts";
import { checkName, invalid } from "./model.ts";
import type { AnalyticsStore } from "./store.ts";

/** What WatchMetrics needs. */
export interface WatchDeps {
  readonly store: Pick<AnalyticsStore, "liveCounts">;
  readonly progress: IngestProgress;
  /** A stream ends normally after this long; the client reconnects. */
  readonly maxDurationMs: number;
  /** Streams served at once; more are resource_exhausted. */
  readonly maxStreams: number;
  /** How long a window waits for accepted events to reach ClickHouse before it is sent anyway. */
  readonly maxLagMs: number;
  readonly now?: () => number;
}

/** The WatchMetrics handler and the number of streams it is serving. */
export interface Watch {
  readonly handlers: Pick<ServiceImpl<typeof AnalyticsService>, "watchMetrics">;
  active(): number;
}

// A stream that fell this many windows behind (a slow ClickHouse) skips to the present.
const MAX_BEHIND = 10;

/**
 * WatchMetrics: one message per interval, aligned to UTC, counting the caller's tenant's events
 * whose time falls in the window. A window is sent once the events accepted before its end are
 * in ClickHouse (or maxLagMs passed), so a count does not miss events still in the ingest buffer.
 * The stream ends when the client cancels, its deadline passes, or maxDurationMs is reached.
 */
export function createWatch(deps: WatchDeps): Watch {
  const now = deps.now ?? Date.now;
  let active = 0;
  return {
    active: () => active,
    handlers: {
      async *watchMetrics(req, ctx) {
        const { tenantId } = requirePrincipal(ctx);
        const intervalMs = req.interval ? durationMs(req.interval) : 1000;
        if (intervalMs < 1000 || intervalMs > 60_000) throw invalid("interval must be 1 to 60 seconds");
        if (req.eventNames.length > 20) throw invalid("at most 20 event names");
        for (const name of req.eventNames) checkName(name);
        const names = [...new Set(req.eventNames)];
        if (active >= deps.maxStreams) {
          throw new ConnectError("too many live metric streams, retry later", Code.ResourceExhausted);
        }
        active++;
        try {
          const signal = ctx.signal;
          const endAt = now() + deps.maxDurationMs;
          let windowStart = Math.floor(now() / intervalMs) * intervalMs;
          while (!signal.aborted) {
            const windowEnd = windowStart + intervalMs;
            if (windowEnd > endAt) return;
            const wait = windowEnd - now();
            if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => {});
            if (signal.aborted) return;
            await deps.progress.settled(windowEnd + deps.maxLagMs, signal);
            if (signal.aborted) return;
            const counts = await deps.store.liveCounts(tenantId, names, windowStart, windowEnd);
            let total = 0;
            for (const n of counts.values()) total += n;
            yield create(WatchMetricsResponseSchema, {
              windowStart: timestampFromMs(windowStart),
              windowEnd: timestampFromMs(windowEnd),
              total: BigInt(total),
              counts: Object.fromEntries([...counts].map(([name, n]) => [name, BigInt(n)])),
              perSecond: total / (intervalMs / 1000),
            });
            windowStart = windowEnd;
            if (now() - windowStart > MAX_BEHIND * intervalMs) {
              windowStart = Math.floor(now() / intervalMs) * intervalMs - intervalMs;
            }
          }
        } finally {
          active--;
        }
      },
    },
  };
}
