// The embedded default of `npm start`: the same service on chDB (current ClickHouse in-process).
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Aggregation, Bucket } from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { eventually, uniqueName } from "@trellis/kit/testing.js";
import { event, type Harness, startAnalytics } from "./harness.ts";

const T0 = Date.UTC(2024, 0, 1);

describe("analytics service on chDB", { timeout: 240_000 }, () => {
  let h: Harness;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "analytics-svc-chdb-"));
    h = await startAnalytics({ CLICKHOUSE_URL: `chdb:${dir}` });
  });
  after(async () => {
    await h?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("Track, TrackBatch and QueryMetrics round trip", async () => {
    const c = await h.user(uniqueName("tenant"));
    const events = [0, 1, 2, 3, 4].map((i) =>
      event("chdb.ping", { user: `u${i % 2}` }, { timeMs: T0 + i * 60_000 }),
    );
    await c.trackBatch({ events: events.slice(0, 4) });
    await c.track({ event: events[4] });
    await c.track({ event: events[0] }); // a retry
    const query = {
      target: { case: "eventName", value: "chdb.ping" },
      startTime: timestampFromMs(T0),
      endTime: timestampFromMs(T0 + 3 * 60_000),
      bucket: Bucket.MINUTE,
    } as const;
    await eventually(
      async () => {
        const r = await c.queryMetrics({
          ...query,
          endTime: timestampFromMs(T0 + 3_600_000),
          bucket: Bucket.HOUR,
          aggregation: Aggregation.COUNT,
        });
        return r.series[0]?.points[0]?.value === 5;
      },
      { timeoutMs: 30_000 },
    );
    const counts = await c.queryMetrics({ ...query, aggregation: Aggregation.COUNT });
    assert.deepEqual(
      counts.series[0]?.points.map((p) => p.value),
      [1, 1, 1],
    );
    const users = await c.queryMetrics({
      ...query,
      endTime: timestampFromMs(T0 + 3_600_000),
      bucket: Bucket.HOUR,
      aggregation: Aggregation.UNIQUE_USERS,
    });
    assert.deepEqual(
      users.series[0]?.points.map((p) => p.value),
      [2],
    );
  });
});
