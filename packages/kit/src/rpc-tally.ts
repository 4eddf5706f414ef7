import type { Histogram } from "prom-client";
import type { RpcMetrics, RpcTally } from "./metrics.js";

/** A tally that can hand its counts over to the metrics. */
export interface Tally extends RpcTally {
  publish(): void;
}

/** The tally of one method's calls on metrics (whose duration histogram has buckets). */
export function createTally(metrics: RpcMetrics, method: string, buckets: readonly number[]): Tally {
  const { service } = metrics;
  const duration = createDurationTally(metrics.duration, { service, method }, buckets);
  const inFlight = metrics.inFlight.labels({ service, method });
  const ended = new Map<string, number>();
  let running = 0;
  let published: number | undefined;
  return {
    start() {
      running++;
    },
    finish(code, seconds) {
      running--;
      duration.observe(seconds);
      ended.set(code, (ended.get(code) ?? 0) + 1);
    },
    publish() {
      duration.publish();
      // Deltas, so other code updating the same metrics directly adds up with these.
      if (published !== running) {
        inFlight.inc(running - (published ?? 0));
        published = running;
      }
      for (const [code, count] of ended) {
        if (count === 0) continue;
        metrics.requests.labels({ service, method, code }).inc(count);
        if (code !== "ok") metrics.errors.labels({ service, method, code }).inc(count);
        ended.set(code, 0);
      }
    },
  };
}

// prom-client's histogram entry for one label set (its hashMap values, prom-client 13 to 15).
interface HistogramEntry {
  labels: Record<string, string>;
  bucketValues: Record<string, number>;
  sum: number;
  count: number;
}

/**
 * Durations counted per bucket in plain numbers and added to the histogram's entry for the label
 * set when the registry is read: prom-client hashes the label set on every observe. Where the
 * entry cannot be found (another prom-client), each duration is observed directly instead.
 */
function createDurationTally(
  histogram: Histogram<"service" | "method">,
  labels: { service: string; method: string },
  bounds: readonly number[],
) {
  const child = histogram.labels(labels);
  const counts: number[] = bounds.map(() => 0);
  let sum = 0;
  let count = 0;
  const entry = (): HistogramEntry | undefined => {
    const map = (histogram as unknown as { hashMap?: Record<string, HistogramEntry> }).hashMap;
    if (typeof map !== "object" || map === null) return undefined;
    const find = () =>
      Object.values(map).find(
        (e) => e.labels?.service === labels.service && e.labels?.method === labels.method,
      );
    let found = find();
    if (!found) {
      histogram.zero(labels);
      found = find();
    }
    const usable = found && typeof found.sum === "number" && typeof found.count === "number";
    return usable && bounds.every((b) => typeof found?.bucketValues?.[b] === "number") ? found : undefined;
  };
  let direct = entry() === undefined;
  return {
    observe(seconds: number) {
      if (direct) {
        child.observe(seconds);
        return;
      }
      sum += seconds;
      count++;
      for (let i = 0; i < bounds.length; i++) {
        if (seconds <= (bounds[i] as number)) {
          counts[i] = (counts[i] as number) + 1;
          break;
        }
      }
    },
    publish() {
      if (count === 0) return;
      const target = entry();
      if (!target) {
        // Cannot happen with the prom-client this was written for; keep the totals right at least.
        direct = true;
        for (let i = 0; i < count; i++) child.observe(sum / count);
      } else {
        target.sum += sum;
        target.count += count;
        for (let i = 0; i < bounds.length; i++) {
          target.bucketValues[bounds[i] as number] =
            (target.bucketValues[bounds[i] as number] as number) + (counts[i] as number);
        }
      }
      counts.fill(0);
      sum = 0;
      count = 0;
    },
  };
}
