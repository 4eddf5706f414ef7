// Independent answers, computed in plain JS over the events the tests inserted.
import type { EventInput, MetricsQuery, PropertyFilter, SeriesResult } from "../src/model.ts";

const BUCKET = { minute: 60_000, hour: 3_600_000, day: 86_400_000 } as const;
const DAY = 86_400_000;

/** Keeps the first copy of each (tenant, event id), as the store promises. */
export function firstCopies(events: readonly EventInput[]): EventInput[] {
  const seen = new Set<string>();
  return events.filter((e) => {
    const key = `${e.tenantId}\n${e.eventId}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The actor key: user id, else anonymous id, else none. */
export function actorOf(e: EventInput): string {
  if (e.userId) return `u:${e.userId}`;
  if (e.anonymousId) return `a:${e.anonymousId}`;
  return "";
}

function matches(e: EventInput, f: PropertyFilter): boolean {
  const props = e.props ?? {};
  const has = Object.hasOwn(props, f.property);
  const v = props[f.property] ?? "";
  const first = f.values[0] ?? "";
  switch (f.op) {
    case "eq":
      return has && v === first;
    case "neq":
      return !(has && v === first);
    case "in":
      return has && f.values.includes(v);
    case "not_in":
      return !(has && f.values.includes(v));
    case "contains":
      return has && v.includes(first);
    case "not_contains":
      return !(has && v.includes(first));
    case "exists":
      return has;
    case "not_exists":
      return !has;
  }
}

/** Byte-wise UTF-8 order, as ClickHouse sorts strings. */
export function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** QueryMetrics computed directly. */
export function refMetrics(all: readonly EventInput[], tenantId: string, q: MetricsQuery): SeriesResult[] {
  const width = BUCKET[q.bucket];
  const revenue = "metric" in q.target && q.target.metric === "order_revenue";
  const name =
    "eventName" in q.target ? q.target.eventName : revenue ? "trellis.core.order.confirmed" : undefined;
  const groupBy = revenue ? "total.currency" : q.groupBy;
  const aggregation = revenue ? "sum" : q.aggregation;
  const sumKey = revenue ? "total.amount_minor" : (q.sumProperty ?? "");
  const groups = new Map<string, Map<number, { count: number; actors: Set<string>; sum: number }>>();
  for (const e of firstCopies(all)) {
    if (e.tenantId !== tenantId || e.timeMs < q.startMs || e.timeMs >= q.endMs) continue;
    if (name !== undefined && e.name !== name) continue;
    if (!(q.filters ?? []).every((f) => matches(e, f))) continue;
    const g = groupBy ? (e.props?.[groupBy] ?? "") : "";
    const buckets = groups.get(g) ?? new Map();
    groups.set(g, buckets);
    const b = Math.floor(e.timeMs / width) * width;
    const cell = buckets.get(b) ?? { count: 0, actors: new Set<string>(), sum: 0 };
    buckets.set(b, cell);
    cell.count += 1;
    if (actorOf(e)) cell.actors.add(actorOf(e));
    cell.sum += e.numProps?.[sumKey] ?? 0;
  }
  if (!groupBy && groups.size === 0) groups.set("", new Map());
  const series = [...groups].map(([group, buckets]) => {
    const points = [];
    let total = 0;
    for (let t = Math.floor(q.startMs / width) * width; t < q.endMs; t += width) {
      const c = buckets.get(t);
      const value = !c
        ? 0
        : aggregation === "count"
          ? c.count
          : aggregation === "sum"
            ? c.sum
            : c.actors.size;
      total += value;
      points.push({ bucketStartMs: t, value });
    }
    return { group, points, total };
  });
  series.sort((a, b) => b.total - a.total || byteCompare(a.group, b.group));
  return series.slice(0, 50).map(({ group, points }) => ({ group, points }));
}

/** Funnel computed directly: the best greedy chain over every first step in range. */
export function refFunnel(
  all: readonly EventInput[],
  tenantId: string,
  steps: readonly string[],
  windowMs: number,
  startMs: number,
  endMs: number,
): number[] {
  const byActor = new Map<string, EventInput[]>();
  for (const e of firstCopies(all)) {
    if (e.tenantId !== tenantId || !actorOf(e) || e.timeMs < startMs || e.timeMs >= endMs + windowMs)
      continue;
    const list = byActor.get(actorOf(e)) ?? [];
    list.push(e);
    byActor.set(actorOf(e), list);
  }
  const reached = steps.map(() => 0);
  for (const events of byActor.values()) {
    const times = steps.map((s) =>
      events
        .filter((e) => e.name === s)
        .map((e) => e.timeMs)
        .sort((a, b) => a - b),
    );
    let best = 0;
    for (const s of times[0] ?? []) {
      if (s < startMs || s >= endMs) continue;
      let level = 1;
      let prev = s;
      for (let i = 1; i < steps.length; i++) {
        const x = (times[i] ?? []).find((t) => t > prev);
        if (x === undefined || x > s + windowMs) break;
        level = i + 1;
        prev = x;
      }
      best = Math.max(best, level);
    }
    for (let i = 0; i < best; i++) reached[i] = (reached[i] ?? 0) + 1;
  }
  return reached;
}

/** Cohort table computed directly. */
export function refRetention(
  all: readonly EventInput[],
  tenantId: string,
  cohortEvent: string,
  returnEvent: string,
  period: "day" | "week",
  periods: number,
  startMs: number,
  nowMs: number,
) {
  const len = period === "day" ? DAY : 7 * DAY;
  const d = Math.floor(startMs / DAY);
  const first = period === "day" ? d * DAY : (d - ((d + 3) % 7)) * DAY;
  const firstSeen = new Map<string, number>();
  const returns = new Map<string, Set<number>>();
  for (const e of firstCopies(all)) {
    if (e.tenantId !== tenantId || !actorOf(e)) continue;
    const a = actorOf(e);
    if (e.name === cohortEvent)
      firstSeen.set(a, Math.min(firstSeen.get(a) ?? Number.POSITIVE_INFINITY, e.timeMs));
    if (e.name === returnEvent && e.timeMs >= first && e.timeMs < first + (2 * periods - 1) * len) {
      const set = returns.get(a) ?? new Set();
      set.add(Math.floor((e.timeMs - first) / len));
      returns.set(a, set);
    }
  }
  const rows = [];
  for (let c = 0; c < periods; c++) {
    const cohortStartMs = first + c * len;
    if (cohortStartMs > nowMs) break;
    const members = [...firstSeen]
      .filter(([, t]) => t >= cohortStartMs && t < cohortStartMs + len)
      .map(([a]) => a);
    const visible = Math.min(periods, Math.floor((nowMs - cohortStartMs) / len) + 1);
    const returned = Array.from(
      { length: visible },
      (_, i) => members.filter((a) => returns.get(a)?.has(c + i)).length,
    );
    rows.push({ cohortStartMs, size: members.length, returned });
  }
  return rows;
}
