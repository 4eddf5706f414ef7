import { type ConfigSource, env, kitConfigSchema, loadConfig } from "@trellis/kit/config.js";

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const STREAM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** `http(s)://…` (a ClickHouse server) or `chdb:<dir>` (chDB in this process), returned as written. */
function parseClickHouseUrl(raw: string): string {
  if (raw.startsWith("chdb:")) return raw;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error("not http(s)://host:port[/database] or chdb:<dir>");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error("scheme must be http, https or chdb");
  }
  return raw;
}

// A server URL's path names the database the client works in (compose: …:8123/trellis).
function databaseOf(url: unknown): string | undefined {
  if (typeof url !== "string" || !/^https?:\/\//.test(url)) return undefined;
  const path = new URL(url).pathname.replace(/^\/+|\/+$/g, "");
  return IDENTIFIER.test(path) ? path : undefined;
}

function parseIdentifier(raw: string): string {
  if (!IDENTIFIER.test(raw)) throw new Error("a plain identifier: letters, digits and _");
  return raw;
}

function parseStreamName(raw: string): string {
  if (!STREAM_NAME.test(raw)) throw new Error("a stream name: letters, digits, _ and -");
  return raw;
}

function parseStreams(raw: string): readonly string[] {
  if (raw === "none") return [];
  const names = raw.split(",").map((s) => s.trim());
  if (names.some((n) => !STREAM_NAME.test(n))) throw new Error("comma-separated stream names, or none");
  return [...new Set(names)];
}

/** Analytics' environment variables: the kit's, plus its own. */
export function analyticsConfigSchema() {
  return {
    ...kitConfigSchema(8002),
    /** http(s)://[user:pass@]host:8123[/database] for a server, or chdb:<dir> for chDB in-process. */
    CLICKHOUSE_URL: env.custom(parseClickHouseUrl, { default: "chdb:.data/clickhouse", secret: true }),
    /** The deployment's database; default: the URL's path, else trellis_analytics. */
    CLICKHOUSE_DATABASE: env.custom(parseIdentifier, {
      default: (earlier) => databaseOf(earlier.CLICKHOUSE_URL) ?? "trellis_analytics",
    }),
    /** JetStream stream buffering accepted client events until they are in ClickHouse. */
    ANALYTICS_INGEST_STREAM: env.custom(parseStreamName, { default: "ANALYTICS_INGEST" }),
    /** Durable consumer name on the ingest stream and on the domain streams. */
    ANALYTICS_CONSUMER: env.custom(parseIdentifier, { default: "analytics" }),
    /** Other services' streams whose events are stored too; "none" for none. */
    ANALYTICS_DOMAIN_STREAMS: env.custom(parseStreams, { default: ["AUTH", "BILLING", "CORE"] }),
    /** Bound of the ingest buffer in messages (one per Track / TrackBatch): beyond it, resource_exhausted. */
    ANALYTICS_INGEST_MAX_MESSAGES: env.int({ default: 100_000, min: 1 }),
    /** Bound of the ingest buffer in bytes. */
    ANALYTICS_INGEST_MAX_BYTES: env.int({ default: 1024 ** 3, min: 1024 * 1024 }),
    /**
     * The format accepted events are buffered in: v2 (row blocks) by default; v1 (event JSON) for
     * the first phase of a rolling upgrade from a release that reads only v1 (every release reads both).
     */
    ANALYTICS_INGEST_FORMAT: env.enum(["v1", "v2"] as const, { default: "v2" }),
    /** Events written to ClickHouse in one insert at most (a flush happens at this size). */
    ANALYTICS_BATCH_EVENTS: env.int({ default: 5000, min: 1, max: 200_000 }),
    /** Longest wait between accepting an event and flushing it to ClickHouse. */
    ANALYTICS_FLUSH_INTERVAL: env.duration({ default: 500, min: 1, max: 60_000 }),
    /** How long JetStream waits for an acknowledgement before redelivering a batch. */
    ANALYTICS_ACK_WAIT: env.duration({ default: 30_000, min: 1000 }),
    /** How long a WatchMetrics stream lives before the server ends it (the client reconnects). */
    ANALYTICS_WATCH_MAX_DURATION: env.duration({ default: 3_600_000, min: 1000 }),
    /** WatchMetrics streams one instance serves at once; more are resource_exhausted. */
    ANALYTICS_WATCH_MAX_STREAMS: env.int({ default: 1000, min: 1 }),
    /** How long a WatchMetrics window waits for accepted events to reach ClickHouse before it is sent. */
    ANALYTICS_WATCH_MAX_LAG: env.duration({ default: 5000, min: 0, max: 60_000 }),
  };
}

/** Analytics' parsed, frozen configuration. */
export type AnalyticsConfig = ReturnType<typeof loadAnalyticsConfig>;

/** Reads analytics' configuration from source; throws one ConfigError naming every bad variable. */
export function loadAnalyticsConfig(source: ConfigSource) {
  return loadConfig(analyticsConfigSchema(), source);
}
