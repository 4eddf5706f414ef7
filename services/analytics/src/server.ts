import type { ConnectRouter } from "@connectrpc/connect";
import {
  AnalyticsService,
  file_trellis_analytics_v1_analytics,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import type { ServiceDefinition, ServiceDeps, ServiceParts } from "@trellis/kit/service.js";
import { Counter, Gauge } from "prom-client";
import { type ClickHouse, openClickHouse } from "./clickhouse.ts";
import { type AnalyticsConfig, loadAnalyticsConfig } from "./config.ts";
import { createIngest, type Ingest } from "./ingest.ts";
import { createIngestProgress } from "./ingest-progress.ts";
import { createQueryHandlers } from "./queries.ts";
import { sql } from "./sql.ts";
import { type AnalyticsStore, createAnalyticsStore } from "./store.ts";
import { createTrackingHandlers } from "./tracking.ts";
import { createWatch, type Watch } from "./watch.ts";

const STOP_TIMEOUT_MS = 10_000;

/** What the AnalyticsService routes are built from. */
export interface BuildDeps {
  readonly store: AnalyticsStore;
  readonly ingest: Pick<Ingest, "accept">;
  readonly watch: Watch;
  readonly onAccepted?: (events: number) => void;
}

/** The AnalyticsService routes over the given dependencies. */
export function build(deps: BuildDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(AnalyticsService, {
      ...createTrackingHandlers({ ingest: deps.ingest, onAccepted: deps.onAccepted }),
      ...createQueryHandlers({ store: deps.store }),
      ...deps.watch.handlers,
    });
  };
}

/** The parts of a started analytics service, with its store and configuration (tests, bench). */
export interface AnalyticsParts extends ServiceParts {
  readonly store: AnalyticsStore;
  readonly config: AnalyticsConfig;
}

/**
 * Wires analytics: opens ClickHouse (a server, or chDB in-process) and applies the schema, makes
 * sure the ingest stream exists, and builds the handlers. start() runs the consumers that write the
 * ingest buffer and the other services' domain events to ClickHouse.
 */
export async function createAnalyticsParts(input: ServiceDeps): Promise<AnalyticsParts> {
  const config = loadAnalyticsConfig(input.env);
  const { logger, nats } = input;
  if (!nats) throw new Error("analytics needs NATS");
  const clickhouse: ClickHouse = await openClickHouse(config.CLICKHOUSE_URL, ".data/clickhouse");
  try {
    const store = createAnalyticsStore({ clickhouse, database: config.CLICKHOUSE_DATABASE });
    await store.migrate();
    const ingest = createIngest({
      nats,
      store,
      stream: config.ANALYTICS_INGEST_STREAM,
      durable: config.ANALYTICS_CONSUMER,
      maxBufferedMessages: config.ANALYTICS_INGEST_MAX_MESSAGES,
      maxBufferedBytes: config.ANALYTICS_INGEST_MAX_BYTES,
      format: config.ANALYTICS_INGEST_FORMAT,
      batchEvents: config.ANALYTICS_BATCH_EVENTS,
      flushIntervalMs: config.ANALYTICS_FLUSH_INTERVAL,
      ackWaitMs: config.ANALYTICS_ACK_WAIT,
      domainStreams: config.ANALYTICS_DOMAIN_STREAMS,
      logger,
    });
    await ingest.ensureStream();
    const watch = createWatch({
      store,
      progress: createIngestProgress({ nats, stream: config.ANALYTICS_INGEST_STREAM }),
      maxDurationMs: config.ANALYTICS_WATCH_MAX_DURATION,
      maxStreams: config.ANALYTICS_WATCH_MAX_STREAMS,
      maxLagMs: config.ANALYTICS_WATCH_MAX_LAG,
    });
    const accepted = new Counter({
      name: "analytics_events_accepted_total",
      help: "Client events acknowledged by Track and TrackBatch.",
      registers: [input.metrics],
    });
    new Gauge({
      name: "analytics_watch_streams",
      help: "WatchMetrics streams being served.",
      registers: [input.metrics],
      collect() {
        this.set(watch.active());
      },
    });
    return {
      routes: build({ store, ingest, watch, onAccepted: (n) => accepted.inc(n) }),
      store,
      config,
      health: {
        clickhouse: async () => {
          await clickhouse.query(sql`SELECT 1`);
        },
      },
      async start() {
        await ingest.start();
      },
      async stop() {
        // A write still in flight is not acknowledged, so JetStream redelivers it: shutdown
        // need not wait for a slow ClickHouse.
        const stopped = ingest.stop().then(() => true);
        const timer = new Promise<false>((resolve) => setTimeout(resolve, STOP_TIMEOUT_MS, false).unref());
        if (!(await Promise.race([stopped, timer]))) {
          logger.warn(
            "analytics: consumers did not stop in time; unacknowledged batches will be redelivered",
          );
        }
        await clickhouse.close();
      },
    };
  } catch (error) {
    await clickhouse.close().catch(() => {});
    throw error;
  }
}

/** Analytics as a Trellis service: name, port, contract and wiring (ClickHouse's schema is applied at start). */
export function createAnalyticsService(): ServiceDefinition {
  return {
    name: "analytics",
    defaultPort: 8002,
    files: [file_trellis_analytics_v1_analytics],
    nats: true,
    create: createAnalyticsParts,
  };
}
