import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  BillingService,
  file_trellis_billing_v1_billing,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { file_trellis_billing_v1_events } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { type EventConsumer, startConsumer } from "@trellis/kit/consumer.js";
import type { ServiceDefinition, ServiceDeps, ServiceParts } from "@trellis/kit/service.js";
import type { NatsConnection } from "nats";
import { createClockHandlers } from "./clock-handlers.ts";
import { loadBillingConfig } from "./config.ts";
import {
  BILLING_SUBJECTS,
  onTenantCreated,
  TENANT_CREATED_CONSUMER,
  TENANT_CREATED_SUBJECT,
} from "./events.ts";
import type { HandlerDeps } from "./handler-kit.ts";
import { createInvoiceHandlers } from "./invoices.ts";
import { createPaymentMethodHandlers } from "./payment-methods.ts";
import { createPaymentHandlers } from "./payments.ts";
import { DAY_MS } from "./periods.ts";
import { createPlanHandlers } from "./plans.ts";
import type { PaymentProvider } from "./provider.ts";
import { createSandboxProvider } from "./sandbox-provider.ts";
import { type Scheduler, startScheduler } from "./scheduler.ts";
import { createStore } from "./store.ts";
import { createSubscriptionHandlers } from "./subscriptions.ts";
import { createUsageHandlers } from "./usage.ts";

/** Everything the routes need (see HandlerDeps), plus the seller name on documents. */
export type BuildDeps = HandlerDeps & { readonly sellerName: string };

/** The BillingService routes over the given dependencies. */
export function build(deps: BuildDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(BillingService, {
      ...createPlanHandlers(deps),
      ...createSubscriptionHandlers(deps),
      ...createPaymentMethodHandlers(deps),
      ...createPaymentHandlers(deps),
      ...createUsageHandlers(deps),
      ...createInvoiceHandlers(deps),
      ...createClockHandlers(deps),
    });
  };
}

/** Options of {@link createBillingService}. */
export interface BillingServiceOptions {
  /** A provider to use instead of the configured one (tests pass a sandbox they count on). */
  readonly provider?: PaymentProvider;
  /** JetStream stream the outbox relay publishes to (default "BILLING"). */
  readonly streamName?: string;
}

/** The parts of a started billing service, with the dependencies its handlers got. */
export interface BillingParts extends ServiceParts {
  readonly deps: BuildDeps;
}

/** Wires billing from its dependencies and configuration; start() runs the scheduler and consumer. */
export async function createBillingParts(
  input: ServiceDeps,
  options: BillingServiceOptions = {},
): Promise<BillingParts> {
  const config = loadBillingConfig(input.env);
  if (!input.sql) throw new Error("billing needs a database");
  const { logger, nats } = input;
  const provider =
    options.provider ?? createSandboxProvider({ timeoutMs: config.BILLING_SANDBOX_TIMEOUT_MS });
  const deps: BuildDeps = {
    store: createStore(input.sql),
    provider,
    logger,
    sellerName: config.BILLING_SELLER_NAME,
    settings: {
      taxRateBps: config.BILLING_TAX_RATE_BPS,
      dunningRetryMs: config.BILLING_DUNNING_RETRY_DAYS.map((d) => d * DAY_MS),
      idempotencyTtlMs: DAY_MS,
    },
  };
  let scheduler: Scheduler | undefined;
  let consumer: EventConsumer | undefined;
  let consumerStart: Promise<void> | undefined;
  const stopping = new AbortController();

  // auth may create its stream after billing starts: keep trying until it exists.
  const startTenantConsumer = async (conn: NatsConnection) => {
    for (let attempt = 0; !stopping.signal.aborted; attempt++) {
      try {
        consumer = await startConsumer({
          nats: conn,
          sql: deps.store.sql,
          stream: config.AUTH_STREAM,
          durable: TENANT_CREATED_CONSUMER,
          filterSubjects: [TENANT_CREATED_SUBJECT],
          handler: onTenantCreated,
          logger,
        });
        return;
      } catch (error) {
        if (attempt === 0)
          logger.warn(
            { err: error, stream: config.AUTH_STREAM },
            "tenant.created consumer waiting for its stream",
          );
        await sleep(Math.min(30_000, 500 * 2 ** Math.min(attempt, 6)), undefined, {
          signal: stopping.signal,
        }).catch(() => {});
      }
    }
  };

  return {
    routes: build(deps),
    deps,
    async start() {
      scheduler = startScheduler(deps.store, deps, logger, config.BILLING_SCHEDULER_INTERVAL_MS);
      if (nats) consumerStart = startTenantConsumer(nats);
    },
    async stop() {
      stopping.abort();
      await scheduler?.stop();
      await consumerStart;
      await consumer?.stop();
    },
  };
}

/** Billing as a Trellis service: name, port, contracts, migrations, stream and wiring. */
export function createBillingService(options: BillingServiceOptions = {}): ServiceDefinition {
  return {
    name: "billing",
    defaultPort: 8003,
    files: [file_trellis_billing_v1_billing, file_trellis_billing_v1_events],
    migrationsDir: fileURLToPath(new URL("../migrations", import.meta.url)),
    stream: { name: options.streamName ?? "BILLING", subjects: [...BILLING_SUBJECTS] },
    nats: true,
    create: (deps) => createBillingParts(deps, options),
  };
}
