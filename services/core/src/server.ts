import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { CoreService, file_trellis_core_v1_core } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { file_trellis_core_v1_events } from "@trellis/gen/trellis/core/v1/events_pb.js";
import { ConfigError } from "@trellis/kit/config.js";
import type { ServiceDefinition, ServiceDeps, ServiceParts } from "@trellis/kit/service.js";
import { type BillingPort, createBillingClient } from "./billing.js";
import { createBillingStatusCache } from "./billing-status.js";
import { createCatalogHandlers } from "./catalog.js";
import { type CoreConfig, type CrashPoint, loadCoreConfig } from "./config.js";
import { coreStream, createCoreEvents, startSubscriptionConsumer } from "./events.js";
import { createInventoryHandlers } from "./inventory.js";
import { createOrderHandlers } from "./orders.js";
import { createSagaRunner, type SagaRunner } from "./saga.js";
import { type Sweeper, startReservationSweeper } from "./sweeper.js";

/** Overrides for tests: a billing other than the one BILLING_URL names. */
export interface CoreOverrides {
  readonly billing?: BillingPort;
}

/** Core's running parts, reachable from tests through the definition built by createCoreService. */
export interface CoreInternals {
  saga?: SagaRunner;
  sweeper?: Sweeper;
}

/** The crash hook of CORE_SAGA_CRASH_AFTER: the process SIGKILLs itself right after that point is persisted. */
function crashHook(point: CrashPoint | undefined): ((at: CrashPoint) => void) | undefined {
  if (!point) return undefined;
  return (at) => {
    if (at === point) process.kill(process.pid, "SIGKILL");
  };
}

/** Builds core's handlers, saga runner, sweeper and event consumer from the kit's dependencies. */
export async function buildCore(
  deps: ServiceDeps,
  config: CoreConfig,
  overrides: CoreOverrides = {},
  internals: CoreInternals = {},
): Promise<ServiceParts> {
  const { sql, nats, logger } = deps;
  if (!sql) throw new Error("core needs DATABASE_URL");
  const events = createCoreEvents({ injectTrace: deps.injectTrace });
  const billingUrl = config.BILLING_URL ?? `${deps.tls ? "https" : "http"}://127.0.0.1:8003`;
  if (deps.tls && !billingUrl.startsWith("https:")) {
    throw new ConfigError([
      { variable: "BILLING_URL", problem: "must be https:// when TLS_* is configured" },
    ]);
  }
  const billing =
    overrides.billing ??
    createBillingClient({
      baseUrl: billingUrl,
      tls: deps.tls,
      forwardedIdentity: config.BILLING_FORWARDED_IDENTITY,
      tracer: deps.tracer,
    });
  const saga = createSagaRunner({
    sql,
    events,
    billing,
    logger,
    persisted: crashHook(config.CORE_SAGA_CRASH_AFTER),
    pollIntervalMs: config.CORE_SAGA_POLL_INTERVAL,
    instanceLocks: deps.config.DATABASE_POOL_MAX > 1,
    concurrency: config.CORE_SAGA_CONCURRENCY,
    timing: {
      reservationTtlMs: config.CORE_RESERVATION_TTL,
      stepTimeoutMs: config.CORE_SAGA_STEP_TIMEOUT,
      chargeAttempts: config.CORE_SAGA_CHARGE_ATTEMPTS,
      retryBaseMs: config.CORE_SAGA_RETRY_BASE,
      retryMaxMs: config.CORE_SAGA_RETRY_MAX,
    },
  });
  internals.saga = saga;
  const billingStatus = createBillingStatusCache({
    sql,
    billing,
    ttlMs: config.CORE_BILLING_STATUS_TTL,
    logger,
  });
  const handlers = {
    ...createCatalogHandlers({ sql, events }),
    ...createInventoryHandlers({ sql, events }),
    ...createOrderHandlers({
      sql,
      events,
      saga,
      billingStatus,
      rules: config.rules,
      waitMs: config.CORE_ORDER_WAIT,
    }),
  };
  let sweeper: Sweeper | undefined;
  let consumer: { stop(): Promise<void> } | undefined;
  return {
    routes: (router: ConnectRouter) => {
      router.service(CoreService, handlers);
    },
    async start() {
      // The resume: every saga left unfinished by a previous instance (crashed or stopped) runs again.
      const resumed = await saga.resumeDue();
      if (resumed > 0) logger.info({ resumed }, "unfinished sagas resumed");
      saga.start();
      sweeper = startReservationSweeper({
        sql,
        events,
        logger,
        intervalMs: config.CORE_SWEEP_INTERVAL,
        onReleased: (orderId) => void saga.kick(orderId),
      });
      internals.sweeper = sweeper;
      if (nats) consumer = startSubscriptionConsumer({ nats, sql, logger });
    },
    async stop() {
      await consumer?.stop();
      await sweeper?.stop();
      await saga.stop();
      if (!overrides.billing) billing.close();
    },
  };
}

/** Core's service definition for the kit (runService, startTestService), with optional test overrides. */
export function createCoreService(
  overrides: CoreOverrides = {},
  internals: CoreInternals = {},
): ServiceDefinition {
  return {
    name: "core",
    defaultPort: 8004,
    files: [file_trellis_core_v1_core, file_trellis_core_v1_events],
    migrationsDir: fileURLToPath(new URL("../migrations", import.meta.url)),
    stream: coreStream,
    nats: true,
    create: (deps) => buildCore(deps, loadCoreConfig(deps.env), overrides, internals),
  };
}

/** Core as the kit runs it. */
export const coreService: ServiceDefinition = createCoreService();
