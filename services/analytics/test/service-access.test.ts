// Analytics' RPCs refuse bad input with invalid_argument and enforce their access rules: a real
// server on port 0, tokens from a test issuer (and from a foreign one).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  Aggregation,
  Bucket,
  FilterOp,
  ReportFormat,
  ReportKind,
  RetentionPeriod,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { createTestIssuer } from "@trellis/kit/test-tokens.js";
import { uniqueName } from "@trellis/kit/testing.js";
import { type AnalyticsClient, event, type Harness, startAnalytics } from "./harness.ts";

const T0 = Date.UTC(2024, 0, 1);
const HOUR = 3_600_000;
const DAY = 86_400_000;
const range = (startMs: number, endMs: number) => ({
  startTime: timestampFromMs(startMs),
  endTime: timestampFromMs(endMs),
});

// Events as the error cases send them.
const ok = () => event("ok.event", { user: "u" });
const validQuery = () =>
  ({
    target: { case: "eventName", value: "ok.event" },
    ...range(T0, T0 + DAY),
    bucket: Bucket.HOUR,
    aggregation: Aggregation.COUNT,
  }) as const;

/** One call per RPC, each answering with the error it raised (or undefined). */
async function codeOf(call: Promise<unknown> | AsyncIterable<unknown>): Promise<Code | undefined> {
  try {
    if (Symbol.asyncIterator in call) {
      for await (const _ of call) break;
    } else await call;
    return undefined;
  } catch (error) {
    return error instanceof ConnectError ? error.code : undefined;
  }
}

describe("analytics service: bad input and access", { timeout: 300_000 }, () => {
  let h: Harness;
  before(async () => {
    h = await startAnalytics();
  });
  after(async () => {
    await h?.close();
  });

  const invalid: [string, (c: AnalyticsClient) => Promise<unknown> | AsyncIterable<unknown>][] = [
    ["Track without event", (c) => c.track({})],
    ["Track with an injected name", (c) => c.track({ event: { ...ok(), name: "x' OR 1=1 --" } })],
    ["Track with a non-UUID id", (c) => c.track({ event: { ...ok(), eventId: "1" } })],
    ["Track without actor", (c) => c.track({ event: { ...ok(), actor: { case: undefined } } })],
    [
      "Track 302 s in the future",
      (c) => c.track({ event: event("x", { user: "u" }, { timeMs: Date.now() + 302_000 }) }),
    ],
    [
      "Track an hour in the future",
      (c) => c.track({ event: event("x", { user: "u" }, { timeMs: Date.now() + HOUR }) }),
    ],
    ["Track before 1970", (c) => c.track({ event: event("x", { user: "u" }, { timeMs: -5000 }) })],
    ["Track with a bad property key", (c) => c.track({ event: { ...ok(), properties: { "bad key": "v" } } })],
    [
      "Track with a non-finite number",
      (c) => c.track({ event: { ...ok(), numericProperties: { n: Number.NaN } } }),
    ],
    ["TrackBatch empty", (c) => c.trackBatch({ events: [] })],
    ["TrackBatch of 1001", (c) => c.trackBatch({ events: Array.from({ length: 1001 }, ok) })],
    ["TrackBatch with one bad event", (c) => c.trackBatch({ events: [ok(), { ...ok(), name: "" }] })],
    ["QueryMetrics without target", (c) => c.queryMetrics({ ...validQuery(), target: { case: undefined } })],
    [
      "QueryMetrics with end before start",
      (c) => c.queryMetrics({ ...validQuery(), ...range(T0 + DAY, T0) }),
    ],
    ["QueryMetrics without bucket", (c) => c.queryMetrics({ ...validQuery(), bucket: Bucket.UNSPECIFIED })],
    [
      "QueryMetrics minutes over 8 days",
      (c) => c.queryMetrics({ ...validQuery(), bucket: Bucket.MINUTE, ...range(T0, T0 + 8 * DAY) }),
    ],
    [
      "QueryMetrics SUM without property",
      (c) => c.queryMetrics({ ...validQuery(), aggregation: Aggregation.SUM }),
    ],
    [
      "QueryMetrics EQ with two values",
      (c) =>
        c.queryMetrics({
          ...validQuery(),
          filters: [{ property: "p", op: FilterOp.EQ, values: ["a", "b"] }],
        }),
    ],
    ["QueryMetrics with an injected group", (c) => c.queryMetrics({ ...validQuery(), groupBy: "plan') --" })],
    ["WatchMetrics every 500 ms", (c) => c.watchMetrics({ interval: durationFromMs(500) })],
    ["WatchMetrics with a bad name", (c) => c.watchMetrics({ eventNames: ["no spaces"] })],
    [
      "Funnel of one step",
      (c) => c.funnel({ steps: ["a"], window: durationFromMs(HOUR), ...range(T0, T0 + DAY) }),
    ],
    ["Funnel without window", (c) => c.funnel({ steps: ["a", "b"], ...range(T0, T0 + DAY) })],
    [
      "Funnel over 400 days",
      (c) => c.funnel({ steps: ["a", "b"], window: durationFromMs(HOUR), ...range(T0, T0 + 400 * DAY) }),
    ],
    [
      "Retention of 0 periods",
      (c) =>
        c.retention({
          cohortEvent: "a",
          returnEvent: "b",
          period: RetentionPeriod.DAY,
          periods: 0,
          startTime: timestampFromMs(T0),
        }),
    ],
    [
      "Retention without period",
      (c) => c.retention({ cohortEvent: "a", returnEvent: "b", periods: 3, startTime: timestampFromMs(T0) }),
    ],
    [
      "GenerateReport without kind",
      (c) => c.generateReport({ format: ReportFormat.CSV, ...range(T0, T0 + DAY) }),
    ],
    [
      "GenerateReport without format",
      (c) => c.generateReport({ kind: ReportKind.ORDERS, ...range(T0, T0 + DAY) }),
    ],
    [
      "GenerateReport without start",
      (c) =>
        c.generateReport({
          kind: ReportKind.ORDERS,
          format: ReportFormat.JSON,
          endTime: timestampFromMs(T0),
        }),
    ],
  ];
  test("bad input is invalid_argument on every RPC", async () => {
    const c = await h.user(uniqueName("tenant"));
    for (const [name, call] of invalid) assert.equal(await codeOf(call(c)), Code.InvalidArgument, name);
  });

  test("an event up to 5 minutes ahead of the server's clock is accepted", async () => {
    const c = await h.user(uniqueName("tenant"));
    const res = await c.track({ event: event("x", { user: "u" }, { timeMs: Date.now() + 290_000 }) });
    assert.ok(res.acceptTime, "accepted");
  });

  const calls: [string, string, (c: AnalyticsClient) => Promise<unknown> | AsyncIterable<unknown>][] = [
    ["Track", "analytics.events.write", (c) => c.track({ event: ok() })],
    ["TrackBatch", "analytics.events.write", (c) => c.trackBatch({ events: [ok()] })],
    ["QueryMetrics", "analytics.metrics.read", (c) => c.queryMetrics(validQuery())],
    ["WatchMetrics", "analytics.metrics.read", (c) => c.watchMetrics({})],
    [
      "Funnel",
      "analytics.metrics.read",
      (c) => c.funnel({ steps: ["a", "b"], window: durationFromMs(HOUR), ...range(T0, T0 + DAY) }),
    ],
    [
      "Retention",
      "analytics.metrics.read",
      (c) =>
        c.retention({
          cohortEvent: "a",
          returnEvent: "b",
          period: RetentionPeriod.WEEK,
          periods: 2,
          startTime: timestampFromMs(T0),
        }),
    ],
    [
      "GenerateReport",
      "analytics.reports.read",
      (c) =>
        c.generateReport({ kind: ReportKind.REVENUE, format: ReportFormat.JSON, ...range(T0, T0 + DAY) }),
    ],
  ];
  test("no token, a foreign or expired token: unauthenticated; a missing permission: permission_denied", async () => {
    const tenant = uniqueName("tenant");
    const foreign = await createTestIssuer({ issuer: h.issuer.issuer });
    const forged = h.raw(`Bearer ${await foreign.sign({ tid: tenant, perms: ["analytics.metrics.read"] })}`);
    const expired = await h.user(tenant, undefined, {
      issuedAt: Math.floor(Date.now() / 1000) - 3600,
      expiresIn: 60,
    });
    for (const [name, permission, call] of calls) {
      assert.equal(await codeOf(call(h.raw())), Code.Unauthenticated, `${name} without token`);
      assert.equal(
        await codeOf(call(h.raw("Bearer not-a-jwt"))),
        Code.Unauthenticated,
        `${name} garbage token`,
      );
      assert.equal(await codeOf(call(forged)), Code.Unauthenticated, `${name} foreign issuer`);
      assert.equal(await codeOf(call(expired)), Code.Unauthenticated, `${name} expired`);
      const others = ["analytics.events.write", "analytics.metrics.read", "analytics.reports.read"].filter(
        (p) => p !== permission,
      );
      assert.equal(
        await codeOf(call(await h.user(tenant, others))),
        Code.PermissionDenied,
        `${name} without ${permission}`,
      );
    }
    // With the permission, each call goes through (WatchMetrics: its first window arrives).
    for (const [name, permission, call] of calls) {
      assert.equal(await codeOf(call(await h.user(tenant, [permission]))), undefined, name);
    }
    await foreign.close();
  });
});
