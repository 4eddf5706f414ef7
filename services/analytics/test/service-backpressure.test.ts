// Ingestion through the RPCs while ClickHouse is unreachable: accepted events wait in the bounded
// durable buffer, a full buffer answers resource_exhausted, readiness reports ClickHouse, and once
// it is back every accepted event is counted exactly once.
import assert from "node:assert/strict";
import { createConnection, createServer, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Aggregation, Bucket } from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { eventually, uniqueName } from "@trellis/kit/testing.js";
import { CLICKHOUSE_URL, event, type Harness, startAnalytics } from "./harness.ts";

const T0 = Date.UTC(2024, 0, 1);
const call = { timeoutMs: 20_000 };

/** A TCP proxy to the test ClickHouse server that the test can cut off and reconnect. */
async function startProxy(target: URL) {
  const sockets = new Set<Socket>();
  let blocked = false;
  const server = createServer((client) => {
    if (blocked) return void client.destroy();
    const upstream = createConnection(Number(target.port || 8123), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    block() {
      blocked = true;
      for (const s of sockets) s.destroy();
    },
    unblock() {
      blocked = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

// Bounded, so that a hang fails the suite instead of stalling it.
describe("analytics service while ClickHouse is down", { timeout: 240_000 }, () => {
  let h: Harness;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  before(async () => {
    proxy = await startProxy(new URL(CLICKHOUSE_URL));
    h = await startAnalytics({ CLICKHOUSE_URL: proxy.url, ANALYTICS_INGEST_MAX_MESSAGES: "2" });
  });
  after(async () => {
    proxy?.unblock();
    await h?.close();
    await proxy?.close();
  });

  test("a full buffer is resource_exhausted; nothing accepted is lost or doubled", async () => {
    const c = await h.user(uniqueName("tenant"));
    const events = [0, 1, 2].map((i) => event("bp.ping", { user: "u" }, { timeMs: T0 + i * 1000 }));
    proxy.block();
    await c.track({ event: events[0] }, call);
    await c.trackBatch({ events: events.slice(0, 2) }, call); // with a retry of the first
    await assert.rejects(
      c.track({ event: events[2] }, call),
      (e: unknown) => e instanceof ConnectError && e.code === Code.ResourceExhausted,
    );
    await eventually(async () => {
      await h.instance.health.checkNow();
      return h.instance.health.failing().includes("clickhouse");
    });
    const ready = await fetch(`http://127.0.0.1:${h.instance.adminPort}/readyz`, {
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(ready.status, 503);

    proxy.unblock();
    await eventually(
      () =>
        c.track({ event: events[2] }, call).then(
          () => true,
          (e: unknown) => {
            if (e instanceof ConnectError && e.code === Code.ResourceExhausted) return false;
            throw e;
          },
        ),
      { timeoutMs: 60_000, intervalMs: 200, what: "the buffer to drain" },
    );
    const count = async () => {
      const r = await c.queryMetrics(
        {
          target: { case: "eventName", value: "bp.ping" },
          startTime: timestampFromMs(T0),
          endTime: timestampFromMs(T0 + 3_600_000),
          bucket: Bucket.HOUR,
          aggregation: Aggregation.COUNT,
        },
        call,
      );
      return r.series[0]?.points[0]?.value;
    };
    await eventually(async () => (await count()) === 3, { timeoutMs: 30_000 });
    await h.instance.health.checkNow();
    assert.deepEqual(h.instance.health.failing(), []);
  });
});
