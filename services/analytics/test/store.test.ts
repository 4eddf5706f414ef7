import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { uniqueName } from "@trellis/kit/testing.js";
import { type ClickHouse, createChdbClickHouse, createServerClickHouse } from "../src/clickhouse.ts";
import type { EventInput, MetricsQuery } from "../src/model.ts";
import { renderReport, reportTable } from "../src/reports.ts";
import { sql } from "../src/sql.ts";
import { type AnalyticsStore, createAnalyticsStore } from "../src/store.ts";
import { clientEvents, DAY, NASTY, orderEvents, rng, T0 } from "./fixtures.ts";
import { actorOf, firstCopies, refFunnel, refMetrics, refRetention } from "./reference.ts";

const SERVER_URL = process.env.TEST_CLICKHOUSE_URL ?? "http://127.0.0.1:8123";

async function rejectsWith(promise: Promise<unknown>, code: Code): Promise<void> {
  await assert.rejects(promise, (e: unknown) => e instanceof ConnectError && e.code === code);
}

const backends: { name: string; open(): Promise<{ ch: ClickHouse; cleanup(): Promise<void> }> }[] = [
  {
    name: "clickhouse-server",
    async open() {
      const ch = createServerClickHouse(SERVER_URL);
      return { ch, cleanup: () => ch.close() };
    },
  },
  {
    name: "chdb",
    async open() {
      const dir = await mkdtemp(join(tmpdir(), "analytics-chdb-"));
      const ch = await createChdbClickHouse(dir);
      return {
        ch,
        async cleanup() {
          await ch.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
];

for (const backend of backends) {
  describe(`analytics store on ${backend.name}`, () => {
    let ch: ClickHouse;
    let cleanup: () => Promise<void>;
    let store: AnalyticsStore;
    const tenantA = uniqueName("tenant_a");
    const tenantB = uniqueName("tenant_b");
    const inserted: EventInput[] = [];
    const insert = async (events: EventInput[]) => {
      inserted.push(...events);
      return store.insertEvents(events);
    };
    const metrics = (q: MetricsQuery, tenant = tenantA) => store.queryMetrics(tenant, q);
    const expectMetrics = async (q: MetricsQuery, source?: "rollup" | "raw") => {
      const got = await metrics(q);
      assert.deepEqual(got.series, refMetrics(inserted, tenantA, q));
      if (source) assert.equal(got.source, source);
      return got;
    };

    before(async () => {
      ({ ch, cleanup } = await backend.open());
      store = createAnalyticsStore({ clickhouse: ch, database: uniqueName("analytics_test") });
      await store.migrate();
      await store.migrate(); // idempotent
      const a = clientEvents(tenantA, 1, 2500);
      const b = clientEvents(tenantB, 1, 800); // same ids as tenant A's first 800: ids are per tenant
      const orders = orderEvents(tenantA, 7, 120);
      const ordersB = orderEvents(tenantB, 8, 40);
      // One batch with both tenants and a copy inside the batch.
      const firstBatch = [...a.slice(0, 1200), ...b.slice(0, 400), ...(a.slice(5, 30) as EventInput[])];
      assert.equal(await insert(firstBatch), 1600);
      assert.equal(
        await insert([...a.slice(1200), ...b.slice(400), ...orders, ...ordersB]),
        1300 + 400 + 160,
      );
      // Redelivered copies, and retries under the same id with another time and name: all ignored.
      const r = rng(99);
      const copies = a.filter(() => r() < 0.1);
      const retried = copies
        .slice(0, 50)
        .map((e) => ({ ...e, timeMs: e.timeMs + 3_600_000, name: "signup" }));
      assert.equal(await insert([...copies, ...retried]), 0);
      // Concurrent inserts of the same new events: the store serializes them, so one copy lands.
      const late = clientEvents(tenantA, 3, 40).map((e) => ({ ...e, eventId: `late-${e.eventId}` }));
      const counts = await Promise.all([insert(late), insert(late)]);
      assert.deepEqual(counts.sort(), [0, 40]);
    });

    after(async () => {
      await store?.dropDatabase();
      await cleanup?.();
    });

    test("counts per bucket match, duplicates counted once, on the rollup and the raw table", async () => {
      const range = { startMs: T0, endMs: T0 + 3 * DAY };
      for (const bucket of ["minute", "hour", "day"] as const) {
        await expectMetrics(
          { target: { eventName: "signup" }, ...range, bucket, aggregation: "count" },
          "rollup",
        );
      }
      await expectMetrics(
        { target: { metric: "all_events" }, ...range, bucket: "hour", aggregation: "count" },
        "rollup",
      );
      // An unaligned range is answered from the raw table, deduplicated at query time.
      const odd = { startMs: T0 + 12_345, endMs: T0 + 2 * DAY + 999 };
      await expectMetrics(
        { target: { eventName: "signup" }, ...odd, bucket: "hour", aggregation: "count" },
        "raw",
      );
      await expectMetrics(
        { target: { metric: "all_events" }, ...odd, bucket: "day", aggregation: "count" },
        "raw",
      );
      const total = (
        await metrics({ target: { metric: "all_events" }, ...range, bucket: "day", aggregation: "count" })
      ).series[0]?.points.reduce((s, p) => s + p.value, 0);
      assert.equal(total, firstCopies(inserted).filter((e) => e.tenantId === tenantA).length);
    });

    test("unique users and sums match", async () => {
      const range = { startMs: T0, endMs: T0 + 3 * DAY };
      await expectMetrics(
        { target: { eventName: "purchase" }, ...range, bucket: "hour", aggregation: "unique_users" },
        "rollup",
      );
      await expectMetrics(
        { target: { metric: "all_events" }, ...range, bucket: "day", aggregation: "unique_users" },
        "rollup",
      );
      await expectMetrics(
        {
          target: { eventName: "purchase" },
          startMs: T0 + 1,
          endMs: T0 + DAY,
          bucket: "hour",
          aggregation: "unique_users",
        },
        "raw",
      );
      await expectMetrics(
        {
          target: { eventName: "purchase" },
          ...range,
          bucket: "day",
          aggregation: "sum",
          sumProperty: "amount",
        },
        "raw",
      );
      await expectMetrics({
        target: { eventName: "purchase" },
        ...range,
        bucket: "day",
        aggregation: "sum",
        sumProperty: "missing",
      });
    });

    test("group by a property and every filter operator", async () => {
      const base = {
        target: { eventName: "page.view" },
        startMs: T0,
        endMs: T0 + 3 * DAY,
        bucket: "day",
      } as const;
      await expectMetrics({ ...base, aggregation: "count", groupBy: "plan" }, "raw");
      await expectMetrics({ ...base, aggregation: "unique_users", groupBy: "country" });
      await expectMetrics({ ...base, aggregation: "sum", sumProperty: "amount", groupBy: "plan" });
      const filters = [
        { property: "country", op: "eq", values: ["FR"] },
        { property: "country", op: "neq", values: ["FR"] },
        { property: "plan", op: "in", values: ["pro", "free", "nope"] },
        { property: "plan", op: "not_in", values: ["pro", "free"] },
        { property: "plan", op: "contains", values: ["r"] },
        { property: "plan", op: "not_contains", values: ["r"] },
        { property: "country", op: "exists", values: [] },
        { property: "country", op: "not_exists", values: [] },
        { property: "plan", op: "contains", values: [""] },
      ] as const;
      for (const f of filters) await expectMetrics({ ...base, aggregation: "count", filters: [f] }, "raw");
      await expectMetrics({
        ...base,
        aggregation: "count",
        filters: [filters[0], filters[4]],
        groupBy: "plan",
      });
      // Grouping with no matching event answers no series; without grouping, one series of zeros.
      const none = await metrics({
        ...base,
        aggregation: "count",
        groupBy: "plan",
        filters: [{ property: "plan", op: "eq", values: ["none"] }],
      });
      assert.deepEqual(none.series, []);
      await expectMetrics({ ...base, target: { eventName: "never.seen" }, aggregation: "count" });
    });

    test("order revenue: one series per currency from confirmed orders", async () => {
      const q: MetricsQuery = {
        target: { metric: "order_revenue" },
        startMs: T0,
        endMs: T0 + 3 * DAY,
        bucket: "day",
        aggregation: "count",
      };
      const got = await expectMetrics(q);
      assert.deepEqual(got.series.map((s) => s.group).sort(), ["EUR", "USD"]);
    });

    test("funnels match the ordered, windowed reference", async () => {
      const cases: [string[], number][] = [
        [["signup", "checkout:start", "purchase"], 600_000],
        [["signup", "checkout:start", "purchase"], DAY],
        [["page.view", "page.view", "purchase"], 3_600_000],
        [["signup", "purchase", "signup", "purchase"], 6 * 3_600_000],
      ];
      for (const [steps, windowMs] of cases) {
        const q = { steps, windowMs, startMs: T0 + 3_600_000, endMs: T0 + 2 * DAY };
        const got = await store.funnel(tenantA, q);
        assert.deepEqual(
          got,
          refFunnel(inserted, tenantA, steps, windowMs, q.startMs, q.endMs),
          steps.join(">"),
        );
        assert.ok((got[0] ?? 0) > (got[got.length - 1] ?? 0) || windowMs === DAY);
      }
    });

    test("retention matches the cohort reference, future periods omitted", async () => {
      const now = T0 + 2 * DAY + 5;
      const got = await store.retention(tenantA, {
        cohortEvent: "signup",
        returnEvent: "purchase",
        period: "day",
        periods: 5,
        startMs: T0 + 7_000,
        nowMs: now,
      });
      assert.deepEqual(got, refRetention(inserted, tenantA, "signup", "purchase", "day", 5, T0 + 7_000, now));
      assert.deepEqual(
        got.map((r) => r.returned.length),
        [3, 2, 1],
      );
      const weekly = await store.retention(tenantA, {
        cohortEvent: "page.view",
        returnEvent: "page.view",
        period: "week",
        periods: 2,
        startMs: T0 + 3 * DAY,
        nowMs: T0 + 30 * DAY,
      });
      assert.deepEqual(
        weekly,
        refRetention(inserted, tenantA, "page.view", "page.view", "week", 2, T0 + 3 * DAY, T0 + 30 * DAY),
      );
    });

    test("activity and orders reports match; CSV and JSON documents", async () => {
      const start = T0 + 1000;
      const end = T0 + 3 * DAY;
      const activity = await reportTable(store, tenantA, "activity", start, end);
      const mine = firstCopies(inserted).filter(
        (e) => e.tenantId === tenantA && e.timeMs >= start && e.timeMs < end,
      );
      const expected = [0, 1, 2].map((d) => {
        const day = mine.filter((e) => Math.floor((e.timeMs - T0) / DAY) === d);
        const users = new Set(day.map(actorOf).filter((a) => a !== ""));
        return [new Date(T0 + d * DAY).toISOString().slice(0, 10), day.length, users.size];
      });
      assert.deepEqual(activity.rows, expected);
      const orders = await reportTable(store, tenantA, "orders", start, end);
      const byKey = new Map<string, number[]>();
      for (const e of mine.filter((x) => x.name.startsWith("trellis.core.order."))) {
        const cancelled = e.name.endsWith("cancelled");
        const currency = (cancelled ? e.props?.["refunded.currency"] : e.props?.["total.currency"]) ?? "";
        const amount =
          (cancelled ? e.numProps?.["refunded.amount_minor"] : e.numProps?.["total.amount_minor"]) ?? 0;
        const key = `${new Date(Math.floor(e.timeMs / DAY) * DAY).toISOString().slice(0, 10)},${currency}`;
        const row = byKey.get(key) ?? [0, 0, 0, 0, 0, 0, 0, 0];
        const i = ["created", "confirmed", "failed", "cancelled"].findIndex((s) => e.name.endsWith(s));
        row[2 * i] = (row[2 * i] ?? 0) + 1;
        row[2 * i + 1] = (row[2 * i + 1] ?? 0) + amount;
        byKey.set(key, row);
      }
      const expectedOrders = [...byKey]
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => [...k.split(","), ...v]);
      assert.deepEqual(orders.rows, expectedOrders);
      const csv = new TextDecoder().decode(renderReport(orders, "orders", "csv", start, end).content);
      assert.equal(csv.split("\r\n")[0], orders.columns.join(","));
      assert.equal(csv.trimEnd().split("\r\n").length, orders.rows.length + 1);
      const json = renderReport(activity, "activity", "json", start, end);
      assert.equal(json.filename, "activity-2024-01-01-2024-01-04.json");
      assert.deepEqual(JSON.parse(new TextDecoder().decode(json.content)).rows[1], {
        day: expected[1]?.[0],
        events: expected[1]?.[1],
        active_users: expected[1]?.[2],
      });
    });

    test("revenue report: MRR, new revenue and churn from billing events", async () => {
      const tenant = uniqueName("tenant_rev");
      const ev = (
        id: string,
        name: string,
        t: number,
        props: Record<string, string>,
        num: Record<string, number> = {},
      ) => ({
        tenantId: tenant,
        eventId: id,
        name: `trellis.billing.${name}`,
        source: "domain" as const,
        timeMs: t,
        receivedAtMs: t,
        props,
        numProps: num,
      });
      const H = 3_600_000;
      const active = "SUBSCRIPTION_STATUS_ACTIVE";
      const month = "PLAN_INTERVAL_MONTH";
      const paid = (id: string, sub: string, t: number, amount: number, currency: string) =>
        ev(
          id,
          "invoice.paid",
          t,
          { subscription_id: sub, "amount_paid.currency": currency },
          { "amount_paid.amount_minor": amount },
        );
      const events = [
        ev("e0", "subscription.created", T0 - 10 * DAY, {
          subscription_id: "s0",
          status: active,
          interval: month,
        }),
        paid("e1", "s0", T0 - 10 * DAY + 1, 300, "USD"),
        ev("e2", "subscription.created", T0 + H, { subscription_id: "s1", status: active, interval: month }),
        paid("e3", "s1", T0 + H + 1, 1000, "USD"),
        ev("e4", "subscription.created", T0 + 2 * H, {
          subscription_id: "s2",
          status: "SUBSCRIPTION_STATUS_TRIALING",
          interval: "PLAN_INTERVAL_YEAR",
        }),
        ev("e5", "subscription.updated", T0 + DAY + H, {
          subscription_id: "s2",
          status: active,
          interval: "PLAN_INTERVAL_YEAR",
        }),
        paid("e6", "s2", T0 + DAY + H + 1, 12_000, "USD"),
        ev("e7", "subscription.created", T0 + DAY + 2 * H, {
          subscription_id: "s3",
          status: active,
          interval: month,
        }),
        paid("e8", "s3", T0 + DAY + 2 * H + 1, 500, "EUR"),
        ev("e9", "subscription.canceled", T0 + 2 * DAY + 5 * H, { subscription_id: "s1" }),
      ];
      await insert([...events, paid("e3", "s1", T0 + H + 1, 1000, "USD")]);
      const table = await reportTable(store, tenant, "revenue", T0, T0 + 3 * DAY);
      assert.deepEqual(table.rows, [
        ["2024-01-01", "USD", 1300, 1000, 1000, 0, 0, 2],
        ["2024-01-02", "EUR", 500, 500, 500, 0, 0, 1],
        ["2024-01-02", "USD", 2300, 12_000, 1000, 0, 0, 3],
        ["2024-01-03", "EUR", 500, 0, 0, 0, 0, 1],
        ["2024-01-03", "USD", 1300, 0, 0, 1000, 1, 2],
      ]);
    });

    test("tenant isolation: another tenant's identical ids and names never leak", async () => {
      const q: MetricsQuery = {
        target: { metric: "all_events" },
        startMs: T0,
        endMs: T0 + 3 * DAY,
        bucket: "day",
        aggregation: "count",
      };
      const b = await metrics(q, tenantB);
      assert.deepEqual(b.series, refMetrics(inserted, tenantB, q));
      for (const tenant of [
        `${tenantA}' OR 1=1 --`,
        `${tenantA}\\`,
        `${tenantA}\0`,
        "' OR tenant_id != '",
        uniqueName("nobody"),
      ]) {
        const got = await metrics(q, tenant);
        assert.deepEqual(
          got.series.map((s) => s.points.every((p) => p.value === 0)),
          [true],
          tenant,
        );
        assert.deepEqual(
          await store.funnel(tenant, {
            steps: ["signup", "purchase"],
            windowMs: DAY,
            startMs: T0,
            endMs: T0 + DAY,
          }),
          [0, 0],
        );
        const live = await store.liveCounts(tenant, [], T0, T0 + 3_600_000);
        assert.equal(live.size, 0);
      }
      const live = await store.liveCounts(tenantA, ["signup", "purchase"], T0, T0 + 3_600_000);
      const ref = firstCopies(inserted).filter((e) => e.tenantId === tenantA && e.timeMs < T0 + 3_600_000);
      assert.equal(live.get("signup"), ref.filter((e) => e.name === "signup").length);
      assert.equal(live.get("purchase"), ref.filter((e) => e.name === "purchase").length);
      assert.equal(live.has("page.view"), false);
    });

    test("injection through property values, filters and groups returns exactly the matching events", async () => {
      const base = {
        target: { eventName: "page.view" },
        startMs: T0,
        endMs: T0 + 3 * DAY,
        bucket: "day",
        aggregation: "count",
      } as const;
      for (const value of NASTY) {
        const got = await expectMetrics({
          ...base,
          filters: [{ property: "plan", op: "eq", values: [value] }],
        });
        assert.ok(got.series.length === 1);
        await expectMetrics({ ...base, filters: [{ property: "plan", op: "contains", values: [value] }] });
      }
      await expectMetrics({ ...base, filters: [{ property: "plan", op: "in", values: NASTY }] });
      await expectMetrics({ ...base, filters: [{ property: "plan", op: "not_in", values: NASTY }] });
      const grouped = await expectMetrics({ ...base, groupBy: "plan" });
      for (const value of NASTY)
        assert.ok(
          grouped.series.some((s) => s.group === value),
          JSON.stringify(value),
        );
      // The largest filter the contract allows: 20 filters of 100 values of 1024 characters.
      const long = Array.from({ length: 100 }, (_, i) => `${"'\\".repeat(500)}${i}`.padEnd(1024, "}"));
      await expectMetrics({
        ...base,
        filters: Array.from({ length: 20 }, () => ({
          property: "plan",
          op: "not_in" as const,
          values: long,
        })),
      });
    });

    test("literals read back exactly: every quoted string is the same string", async () => {
      const r = rng(5);
      const samples = [...NASTY, "\u2028\u2029", "\ud83d\ude00", "a".repeat(3000)];
      for (let i = 0; i < 200; i++) {
        const len = Math.floor(r() * 20);
        const cps = Array.from({ length: len }, () => {
          const k = r();
          if (k < 0.3) return Math.floor(r() * 0x80);
          if (k < 0.5) return [0x27, 0x5c, 0x22, 0x7d, 0x7b, 0x3b, 0x2d, 0x00][Math.floor(r() * 8)] as number;
          if (k < 0.8) return 0x80 + Math.floor(r() * 0xd000);
          return 0x10000 + Math.floor(r() * 0xfffff);
        });
        samples.push(String.fromCodePoint(...cps));
      }
      for (const [i, s] of samples.entries()) {
        const [row] = await ch.query<{ v: string; n: number | string }>(sql`SELECT ${s} AS v, ${i} AS n`);
        assert.equal(row?.v, s, `sample ${i}`);
      }
      const [numbers] = await ch.query<Record<string, number>>(
        sql`SELECT ${-5} - ${-3} AS a, ${0.1} AS b, ${1e-7} AS c, ${-0} AS d`,
      );
      assert.deepEqual(numbers, { a: -2, b: 0.1, c: 1e-7, d: 0 });
    });

    test("bad input is rejected with InvalidArgument before any SQL runs", async () => {
      const ok: MetricsQuery = {
        target: { eventName: "signup" },
        startMs: T0,
        endMs: T0 + DAY,
        bucket: "hour",
        aggregation: "count",
      };
      const bad: MetricsQuery[] = [
        { ...ok, target: { eventName: "x' OR 1=1 --" } },
        { ...ok, target: { eventName: "" } },
        { ...ok, endMs: ok.startMs },
        { ...ok, startMs: Number.NaN },
        { ...ok, bucket: "minute", endMs: T0 + 8 * DAY },
        { ...ok, bucket: "week" as never },
        { ...ok, aggregation: "sum" },
        { ...ok, aggregation: "sum", sumProperty: "amount') --" },
        { ...ok, groupBy: "plan' OR 1=1" },
        { ...ok, filters: [{ property: "plan}", op: "eq", values: ["x"] }] },
        { ...ok, filters: [{ property: "plan", op: "eq", values: [] }] },
        { ...ok, filters: [{ property: "plan", op: "exists", values: ["x"] }] },
        { ...ok, filters: [{ property: "plan", op: "like" as never, values: ["x"] }] },
        { ...ok, filters: [{ property: "plan", op: "eq", values: ["\ud800"] }] },
        { ...ok, filters: [{ property: "plan", op: "eq", values: ["x".repeat(1025)] }] },
        {
          ...ok,
          filters: Array.from({ length: 21 }, () => ({
            property: "plan",
            op: "exists" as const,
            values: [],
          })),
        },
      ];
      for (const q of bad) await rejectsWith(metrics(q), Code.InvalidArgument);
      await rejectsWith(
        store.funnel(tenantA, { steps: ["signup"], windowMs: DAY, startMs: T0, endMs: T0 + DAY }),
        Code.InvalidArgument,
      );
      await rejectsWith(
        store.funnel(tenantA, { steps: ["a", "b'"], windowMs: DAY, startMs: T0, endMs: T0 + DAY }),
        Code.InvalidArgument,
      );
      await rejectsWith(
        store.funnel(tenantA, { steps: ["a", "b"], windowMs: 91 * DAY, startMs: T0, endMs: T0 + DAY }),
        Code.InvalidArgument,
      );
      const retention = {
        cohortEvent: "signup",
        returnEvent: "purchase",
        period: "day" as const,
        periods: 53,
        startMs: T0,
        nowMs: T0,
      };
      await rejectsWith(store.retention(tenantA, retention), Code.InvalidArgument);
      await rejectsWith(
        store.retention(tenantA, { ...retention, periods: 2, returnEvent: "--" }),
        Code.InvalidArgument,
      );
      await rejectsWith(store.queryMetrics("", ok), Code.InvalidArgument);
      const event = clientEvents(tenantA, 11, 1)[0] as EventInput;
      for (const broken of [
        { ...event, name: "bad name" },
        { ...event, eventId: "" },
        { ...event, timeMs: -1 },
        { ...event, props: { "bad key": "v" } },
        { ...event, props: { k: "\udc00" } },
        { ...event, numProps: { n: Number.POSITIVE_INFINITY } },
      ]) {
        await rejectsWith(store.insertEvents([broken]), Code.InvalidArgument);
      }
      await rejectsWith(reportTable(store, tenantA, "activity", T0, T0 + 400 * DAY), Code.InvalidArgument);
    });
  });
}
