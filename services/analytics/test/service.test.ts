// Analytics through its RPCs: a real server on port 0 against the test ClickHouse server and a
// private nats-server, with tokens from a test issuer. Answers are checked against values this file
// computes itself from the events it sent.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  Aggregation,
  Bucket,
  type ClientEvent,
  FilterOp,
  Metric,
  type QueryMetricsRequestSchema,
  ReportFormat,
  ReportKind,
  RetentionPeriod,
  type WatchMetricsResponse,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { OrderConfirmedSchema } from "@trellis/gen/trellis/core/v1/events_pb.js";
import { eventHeaders } from "@trellis/kit/events.js";
import { eventually, uniqueName } from "@trellis/kit/testing.js";
import { type AnalyticsClient, event, type Harness, startAnalytics } from "./harness.ts";

const T0 = Date.UTC(2024, 0, 1); // a Monday
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

type Req = MessageInitShape<typeof QueryMetricsRequestSchema>;
const range = (startMs: number, endMs: number) => ({
  startTime: timestampFromMs(startMs),
  endTime: timestampFromMs(endMs),
});
const values = (series: { points: { value: number }[] } | undefined) => series?.points.map((p) => p.value);

/** Buckets of width over [start, end) filled from (time, value) pairs, the way the contract says. */
function expected(items: { t: number; v: number }[], start: number, end: number, width: number): number[] {
  const out: number[] = [];
  for (let b = start; b < end; b += width) {
    out.push(items.filter((x) => x.t >= b && x.t < b + width).reduce((a, x) => a + x.v, 0));
  }
  return out;
}

// Suites are bounded, so that a hang fails instead of stalling the run.
describe("analytics service over RPC", { timeout: 300_000 }, () => {
  let h: Harness;
  const tenantA = uniqueName("tenant_a");
  const tenantB = uniqueName("tenant_b");
  let a: AnalyticsClient;
  let b: AnalyticsClient;

  before(async () => {
    h = await startAnalytics({ ANALYTICS_DOMAIN_STREAMS: "CORE", ANALYTICS_WATCH_MAX_LAG: "20s" }, (nc) =>
      nc
        .jetstreamManager()
        .then((m) => m.streams.add({ name: "CORE", subjects: ["trellis.core.>"] }))
        .then(() => undefined),
    );
    a = await h.user(tenantA);
    b = await h.user(tenantB);
  });
  after(async () => {
    await h?.close();
  });

  // 20 page views 7 minutes apart by 4 users on two plans, one signup; retries of both.
  const views = Array.from({ length: 20 }, (_, i) =>
    event(
      "page.view",
      { user: `u${i % 4}` },
      { timeMs: T0 + i * 7 * MIN, props: { plan: i % 3 === 0 ? "pro" : "free" }, nums: { ms: i } },
    ),
  );
  const signup = event("signup", { anon: "visitor-1" }, { timeMs: T0 + 10 * MIN });
  const timeOf = (e: ClientEvent) => (e.time ? timestampMs(e.time) : 0);
  const userOf = (e: ClientEvent) => String(e.actor.value);

  test("Track and TrackBatch, then QueryMetrics answers exact counts (retries counted once)", async () => {
    const tracked = await a.track({ event: signup });
    assert.ok(tracked.acceptTime);
    const batch = await a.trackBatch({ events: views });
    assert.equal(batch.acceptedCount, 20);
    await a.trackBatch({ events: views.slice(0, 5) }); // a client retry
    await a.track({ event: { ...signup, time: timestampFromMs(T0 + 2 * HOUR) } }); // same id, new time
    // The same ids in upper case are the same events.
    await a.track({ event: { ...views[1], eventId: views[1]?.eventId.toUpperCase() } as ClientEvent });

    const query = (r: Req) =>
      a.queryMetrics({
        ...range(T0, T0 + 3 * HOUR),
        bucket: Bucket.HOUR,
        aggregation: Aggregation.COUNT,
        ...r,
      });
    const views3h = views.map((e) => ({ t: timeOf(e), v: 1 }));
    const counts = expected(views3h, T0, T0 + 3 * HOUR, HOUR);
    await eventually(async () => {
      const r = await query({ target: { case: "eventName", value: "page.view" } });
      return values(r.series[0])?.reduce((x, y) => x + y, 0) === 20;
    });
    const r = await query({ target: { case: "eventName", value: "page.view" } });
    assert.deepEqual(
      r.series.map((s) => [s.group, values(s)]),
      [["", counts]],
    );
    assert.deepEqual(
      r.series[0]?.points.map((p) => p.bucketStart && timestampMs(p.bucketStart)),
      [T0, T0 + HOUR, T0 + 2 * HOUR],
    );
    const all = await query({ target: { case: "metric", value: Metric.ALL_EVENTS } });
    assert.deepEqual(
      values(all.series[0]),
      expected([...views3h, { t: T0 + 10 * MIN, v: 1 }], T0, T0 + 3 * HOUR, HOUR),
    );

    // Unique users per hour, from the raw table because of the filter.
    const uniq = await query({
      target: { case: "eventName", value: "page.view" },
      aggregation: Aggregation.UNIQUE_USERS,
      filters: [{ property: "plan", op: FilterOp.IN, values: ["pro", "free"] }],
    });
    const uniqueIn = (s: number) =>
      new Set(views.filter((e) => timeOf(e) >= s && timeOf(e) < s + HOUR).map(userOf)).size;
    assert.deepEqual(
      values(uniq.series[0]),
      [0, 1, 2].map((i) => uniqueIn(T0 + i * HOUR)),
    );

    // Sum of a numeric property per plan, largest total first.
    const sums = await query({
      target: { case: "eventName", value: "page.view" },
      aggregation: Aggregation.SUM,
      sumProperty: "ms",
      groupBy: "plan",
    });
    const byPlan = (plan: string) =>
      expected(
        views
          .filter((e) => e.properties.plan === plan)
          .map((e) => ({ t: timeOf(e), v: e.numericProperties.ms ?? 0 })),
        T0,
        T0 + 3 * HOUR,
        HOUR,
      );
    assert.deepEqual(
      sums.series.map((s) => [s.group, values(s)]),
      [
        ["free", byPlan("free")],
        ["pro", byPlan("pro")],
      ],
    );
  });

  test("tenant B's token never sees tenant A's data", async () => {
    await eventually(async () => {
      const r = await a.queryMetrics({
        target: { case: "eventName", value: "page.view" },
        ...range(T0, T0 + DAY),
        bucket: Bucket.DAY,
        aggregation: Aggregation.COUNT,
      });
      return values(r.series[0])?.[0] === 20;
    });
    const dayQuery = {
      ...range(T0, T0 + DAY),
      bucket: Bucket.DAY,
      aggregation: Aggregation.COUNT,
    } as const;
    const seenByB = await b.queryMetrics({
      target: { case: "metric", value: Metric.ALL_EVENTS },
      ...dayQuery,
    });
    assert.deepEqual(values(seenByB.series[0]), [0]);
    const report = await b.generateReport({
      kind: ReportKind.ACTIVITY,
      format: ReportFormat.CSV,
      ...range(T0, T0 + DAY),
    });
    assert.equal(new TextDecoder().decode(report.content), "day,events,active_users\r\n2024-01-01,0,0\r\n");
    const funnel = await b.funnel({
      steps: ["signup", "page.view"],
      window: durationFromMs(DAY),
      ...range(T0, T0 + DAY),
    });
    assert.deepEqual(
      funnel.steps.map((s) => s.users),
      [0n, 0n],
    );
    // B's own events are B's alone.
    await b.trackBatch({
      events: [0, 1, 2].map((i) => event("page.view", { user: "b" }, { timeMs: T0 + i })),
    });
    const pageViews = { target: { case: "eventName", value: "page.view" }, ...dayQuery } as const;
    await eventually(async () => values((await b.queryMetrics(pageViews)).series[0])?.[0] === 3);
    assert.deepEqual(values((await a.queryMetrics(pageViews)).series[0]), [20]);
  });

  test("WatchMetrics streams a count that changes once events are tracked, per tenant", async () => {
    const tenant = uniqueName("tenant_w");
    const w = await h.user(tenant);
    const stop = new AbortController();
    const watch = { eventNames: ["watch.ping", "watch.pong"], interval: durationFromMs(1000) };
    const options = { signal: stop.signal };
    const stream = w.watchMetrics(watch, options)[Symbol.asyncIterator]();
    const other = b.watchMetrics(watch, options)[Symbol.asyncIterator]();
    const next = async (it: AsyncIterator<WatchMetricsResponse>) => {
      const r = await it.next();
      assert.ok(!r.done, "the stream goes on");
      return r.value;
    };
    try {
      const first = await next(stream);
      assert.equal(first.total, 0n);
      const start = timestampMs(first.windowEnd ?? timestampFromMs(0));
      // Server time (no time set): the events fall in windows after the first one.
      const pings = [1, 2, 3].map(() => event("watch.ping", { user: "w1" }));
      await w.trackBatch({
        events: [...pings, event("watch.pong", { anon: "a1" }), event("watch.other", { user: "w1" })],
      });
      await w.track({ event: event("watch.pong", { user: "w2" }) });
      await w.track({ event: pings[0] as ClientEvent }); // a retry: counted once
      let total = 0n;
      const counts: Record<string, bigint> = {};
      let previousEnd = start;
      for (let i = 0; i < 60 && total < 5n; i++) {
        const m = await next(stream);
        assert.equal(timestampMs(m.windowStart ?? timestampFromMs(0)), previousEnd, "windows are contiguous");
        previousEnd = timestampMs(m.windowEnd ?? timestampFromMs(0));
        assert.equal(m.perSecond, Number(m.total));
        total += m.total;
        for (const [name, n] of Object.entries(m.counts)) counts[name] = (counts[name] ?? 0n) + n;
      }
      assert.equal(total, 5n);
      assert.deepEqual(counts, { "watch.ping": 3n, "watch.pong": 2n });
      // Another tenant watching the same names saw none of it.
      for (;;) {
        const m = await next(other);
        assert.equal(m.total, 0n);
        if (timestampMs(m.windowEnd ?? timestampFromMs(0)) >= previousEnd) break;
      }
    } finally {
      stop.abort();
    }
    // The server lets go of cancelled streams.
    await eventually(async () => {
      const metrics = `http://127.0.0.1:${h.instance.adminPort}/metrics`;
      const text = await (await fetch(metrics, { signal: AbortSignal.timeout(10_000) })).text();
      return /^analytics_watch_streams 0$/m.test(text);
    });
  });

  test("Funnel, Retention and GenerateReport answer from known data", async () => {
    const tenant = uniqueName("tenant_f");
    const f = await h.user(tenant);
    const at = (user: string, name: string, t: number) => event(name, { user }, { timeMs: t });
    const t = T0 + HOUR;
    const events = [
      // a1 converts fully, a2 stops at signup, a3 only views, a4 signs up before viewing,
      // a5 signs up after the 1 h window.
      at("a1", "f.view", t),
      at("a1", "f.signup", t + MIN),
      at("a1", "f.buy", t + 2 * MIN),
      at("a2", "f.view", t),
      at("a2", "f.signup", t + 30 * MIN),
      at("a3", "f.view", t + MIN),
      at("a4", "f.signup", t),
      at("a4", "f.view", t + MIN),
      at("a5", "f.view", t),
      at("a5", "f.signup", t + 2 * HOUR),
      // Retention: c1 joins on day 0 and visits days 0, 1, 2; c2 joins day 0, visits day 2;
      // c3 joins day 1, visits day 2.
      at("c1", "r.join", T0 + 1000),
      at("c1", "r.visit", T0 + 2000),
      at("c1", "r.visit", T0 + DAY + 5),
      at("c1", "r.visit", T0 + 2 * DAY + 5),
      at("c2", "r.join", T0 + 3000),
      at("c2", "r.visit", T0 + 2 * DAY + 9),
      at("c3", "r.join", T0 + DAY + 1),
      at("c3", "r.visit", T0 + 2 * DAY + 1),
    ];
    await f.trackBatch({ events });
    await eventually(async () => {
      const r = await f.queryMetrics({
        target: { case: "metric", value: Metric.ALL_EVENTS },
        ...range(T0, T0 + 3 * DAY),
        bucket: Bucket.DAY,
        aggregation: Aggregation.COUNT,
      });
      return values(r.series[0])?.reduce((x, y) => x + y, 0) === events.length;
    });

    const funnel = await f.funnel({
      steps: ["f.view", "f.signup", "f.buy"],
      window: durationFromMs(HOUR),
      ...range(T0, T0 + DAY),
    });
    assert.deepEqual(
      funnel.steps.map((s) => [s.eventName, s.users, s.conversionFromPrevious, s.conversionFromFirst]),
      [
        ["f.view", 5n, 1, 1],
        ["f.signup", 2n, 0.4, 0.4],
        ["f.buy", 1n, 0.5, 0.2],
      ],
    );

    const retention = await f.retention({
      cohortEvent: "r.join",
      returnEvent: "r.visit",
      period: RetentionPeriod.DAY,
      periods: 3,
      startTime: timestampFromMs(T0 + 5 * HOUR), // rounded down to T0
    });
    assert.deepEqual(
      retention.rows.map((r) => [
        r.cohortStart && timestampMs(r.cohortStart),
        r.cohortSize,
        r.returned,
        r.retention,
      ]),
      [
        [T0, 2n, [1n, 1n, 2n], [0.5, 0.5, 1]],
        [T0 + DAY, 1n, [0n, 1n, 0n], [0, 1, 0]],
        [T0 + 2 * DAY, 0n, [0n, 0n, 0n], [0, 0, 0]],
      ],
    );

    // Activity per day: events and distinct users, computed from what was sent.
    const days = [0, 1, 2].map((d) => {
      const inDay = events.filter((e) => timeOf(e) >= T0 + d * DAY && timeOf(e) < T0 + (d + 1) * DAY);
      return [
        new Date(T0 + d * DAY).toISOString().slice(0, 10),
        inDay.length,
        new Set(inDay.map(userOf)).size,
      ];
    });
    const csv = await f.generateReport({
      kind: ReportKind.ACTIVITY,
      format: ReportFormat.CSV,
      ...range(T0, T0 + 3 * DAY),
    });
    assert.equal(csv.contentType, "text/csv; charset=utf-8");
    assert.equal(csv.filename, "activity-2024-01-01-2024-01-04.csv");
    assert.equal(
      new TextDecoder().decode(csv.content),
      `day,events,active_users\r\n${days.map((d) => d.join(",")).join("\r\n")}\r\n`,
    );
    const json = await f.generateReport({
      kind: ReportKind.ACTIVITY,
      format: ReportFormat.JSON,
      ...range(T0, T0 + 3 * DAY),
    });
    assert.equal(json.contentType, "application/json");
    const doc = JSON.parse(new TextDecoder().decode(json.content));
    assert.deepEqual(
      doc.rows,
      days.map(([day, events, activeUsers]) => ({ day, events, active_users: activeUsers })),
    );
  });

  test("core's order events are consumed and answer ORDER_REVENUE and the orders report", async () => {
    const tenant = uniqueName("tenant_o");
    const o = await h.user(tenant);
    const js = h.nc.jetstream();
    const publish = async (amount: bigint, currency: string, t: number) => {
      const id = randomUUID();
      const body = create(OrderConfirmedSchema, {
        tenantId: tenant,
        orderId: `ord-${id}`,
        userId: "buyer",
        total: { amountMinor: amount, currency },
        confirmTime: timestampFromMs(t),
      });
      const headers = eventHeaders({
        id,
        type: OrderConfirmedSchema.typeName,
        service: "core",
        time: new Date(t),
      });
      await js.publish("trellis.core.order.confirmed", toBinary(OrderConfirmedSchema, body), { headers });
    };
    await publish(1999n, "USD", T0 + HOUR);
    await publish(1n, "USD", T0 + DAY + HOUR);
    await publish(500n, "EUR", T0 + DAY + 2 * HOUR);
    const revenue = async () =>
      o.queryMetrics({
        target: { case: "metric", value: Metric.ORDER_REVENUE },
        ...range(T0, T0 + 2 * DAY),
        bucket: Bucket.DAY,
        aggregation: Aggregation.COUNT,
      });
    await eventually(async () => (await revenue()).series.length === 2, { timeoutMs: 30_000 });
    assert.deepEqual(
      (await revenue()).series.map((s) => [s.group, values(s)]),
      [
        ["USD", [1999, 1]],
        ["EUR", [0, 500]],
      ],
    );
    const report = await o.generateReport({
      kind: ReportKind.ORDERS,
      format: ReportFormat.CSV,
      ...range(T0, T0 + 2 * DAY),
    });
    const lines = new TextDecoder().decode(report.content).trim().split("\r\n");
    assert.deepEqual(lines.slice(1), [
      "2024-01-01,USD,0,0,1,1999,0,0,0,0",
      "2024-01-02,EUR,0,0,1,500,0,0,0,0",
      "2024-01-02,USD,0,0,1,1,0,0,0,0",
    ]);
  });

  test("ClickHouse is a health dependency of the running service", async () => {
    await h.instance.health.checkNow();
    assert.deepEqual(h.instance.health.failing(), []);
    const ready = await fetch(`http://127.0.0.1:${h.instance.adminPort}/readyz`, {
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(ready.status, 200);
  });
});
