import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigError } from "@trellis/kit/config.js";
import { loadAnalyticsConfig } from "../src/config.ts";

const problemsOf = (env: Record<string, string>) => {
  try {
    loadAnalyticsConfig(env);
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems.map((p) => p.variable);
  }
};

describe("analytics config", () => {
  test("defaults: chDB in .data/clickhouse, port 8002, flushes within a second, all domain streams", () => {
    const c = loadAnalyticsConfig({});
    assert.equal(c.PORT, 8002);
    assert.equal(c.CLICKHOUSE_URL, "chdb:.data/clickhouse");
    assert.equal(c.CLICKHOUSE_DATABASE, "trellis_analytics");
    assert.ok(c.ANALYTICS_FLUSH_INTERVAL <= 1000);
    assert.deepEqual(c.ANALYTICS_DOMAIN_STREAMS, ["AUTH", "BILLING", "CORE"]);
    assert.ok(Object.isFrozen(c));
  });

  test("a server URL's path names the database unless CLICKHOUSE_DATABASE is set", () => {
    const url = "http://trellis:secret@clickhouse:8123/trellis";
    assert.equal(loadAnalyticsConfig({ CLICKHOUSE_URL: url }).CLICKHOUSE_DATABASE, "trellis");
    assert.equal(
      loadAnalyticsConfig({ CLICKHOUSE_URL: url, CLICKHOUSE_DATABASE: "other" }).CLICKHOUSE_DATABASE,
      "other",
    );
    assert.deepEqual(loadAnalyticsConfig({ ANALYTICS_DOMAIN_STREAMS: "none" }).ANALYTICS_DOMAIN_STREAMS, []);
  });

  test("every malformed variable is named, and the URL's password is never echoed", () => {
    assert.deepEqual(
      problemsOf({
        CLICKHOUSE_URL: "ftp://u:hunter2@x",
        CLICKHOUSE_DATABASE: "x; DROP",
        ANALYTICS_FLUSH_INTERVAL: "2m",
        ANALYTICS_DOMAIN_STREAMS: "CORE,bad name",
        ANALYTICS_INGEST_MAX_MESSAGES: "0",
      }).sort(),
      [
        "ANALYTICS_DOMAIN_STREAMS",
        "ANALYTICS_FLUSH_INTERVAL",
        "ANALYTICS_INGEST_MAX_MESSAGES",
        "CLICKHOUSE_DATABASE",
        "CLICKHOUSE_URL",
      ],
    );
    assert.throws(
      () => loadAnalyticsConfig({ CLICKHOUSE_URL: "ftp://u:hunter2@x" }),
      (e: unknown) => e instanceof ConfigError && !e.message.includes("hunter2"),
    );
  });
});
