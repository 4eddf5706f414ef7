import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BillingService,
  MeteredComponentSchema,
  PlanInterval,
  PriceSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import type { ServiceInstance } from "@trellis/kit/service.js";
import { startTestService } from "@trellis/kit/service.js";
import { createTestIssuer, type TestIssuer } from "@trellis/kit/test-tokens.js";
import {
  createTestDatabase,
  startNatsServer,
  type TestDatabase,
  type TestNatsServer,
  uniqueName,
} from "@trellis/kit/testing.js";
import { createSandboxProvider, type SandboxProvider } from "../src/sandbox-provider.ts";
import { createBillingService } from "../src/server.ts";
import { createStore, type Store } from "../src/store.ts";

/** Every billing permission a tenant admin (or a test) may hold. */
export const ALL_PERMISSIONS = [
  "billing.plans.manage",
  "billing.subscriptions.manage",
  "billing.subscriptions.read",
  "billing.payment_methods.manage",
  "billing.payment_methods.read",
  "billing.usage.write",
  "billing.invoices.read",
  "billing.invoices.manage",
  "billing.clock.advance",
] as const;

/** A billing client. */
export type BillingClient = Client<typeof BillingService>;

/** A billing server on port 0 with its own database and NATS server, and ways to call it. */
export interface Harness {
  readonly instance: ServiceInstance & { readonly baseUrl: string };
  readonly store: Store;
  readonly provider: SandboxProvider;
  readonly nats: TestNatsServer;
  readonly issuer: TestIssuer;
  /** A client acting as a user of tenantId holding perms (all billing permissions by default). */
  user(tenantId: string, perms?: readonly string[]): Promise<BillingClient>;
  /** A client acting as another service (mesh identity via x-forwarded-client-cert), "core" by default. */
  service(name?: string, bearer?: string): BillingClient;
  close(): Promise<void>;
}

const header =
  (name: string, value: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set(name, value);
    return next(req);
  };

/** Starts billing for a test file: a fresh database, a private nats-server, a test token issuer. */
export async function startBilling(
  env: Record<string, string> = {},
  beforeStart?: (natsUrl: string) => Promise<void>,
): Promise<Harness> {
  const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
  const db: TestDatabase = await createTestDatabase("billing_test", adminUrl);
  const nats = await startNatsServer();
  await beforeStart?.(nats.url);
  const issuer = await createTestIssuer();
  const provider = createSandboxProvider({ timeoutMs: 5 });
  const instance = await startTestService(createBillingService({ provider }), {
    databaseUrl: db.url,
    natsUrl: nats.url,
    jwksUrl: await issuer.serve(),
    env: {
      JWT_ISSUER: issuer.issuer,
      JWT_AUDIENCE: issuer.audience,
      TRUST_FORWARDED_IDENTITY: "true",
      BILLING_SCHEDULER_INTERVAL_MS: "0",
      ...env,
    },
  });
  const store = createStore(instance.deps.sql as NonNullable<typeof instance.deps.sql>);
  const transport = (interceptors: Interceptor[]) =>
    createGrpcTransport({ baseUrl: instance.baseUrl, interceptors });
  return {
    instance,
    store,
    provider,
    nats,
    issuer,
    async user(tenantId, perms = ALL_PERMISSIONS) {
      const token = await issuer.sign({ tid: tenantId, perms, expiresIn: 900 });
      return createClient(BillingService, transport([header("authorization", `Bearer ${token}`)]));
    },
    service(name = "core", bearer) {
      const xfcc = `By=spiffe://trellis.local/ns/trellis/sa/billing;URI=spiffe://trellis.local/ns/trellis/sa/${name}`;
      const interceptors = [header("x-forwarded-client-cert", xfcc)];
      if (bearer) interceptors.push(header("authorization", `Bearer ${bearer}`));
      return createClient(BillingService, transport(interceptors));
    },
    async close() {
      await instance.close();
      await nats.dispose();
      await issuer.close();
      await db.drop();
    },
  };
}

/** A fresh tenant id. */
export function newTenant(): string {
  return uniqueName("tenant");
}

/** January 1st, 00:00 UTC, of a year after the current one: a deterministic future calendar. */
export function futureYearStart(yearsAhead = 1): number {
  return Date.UTC(new Date().getUTCFullYear() + yearsAhead, 0, 1);
}

/** A Timestamp at ms. */
export const at = (ms: number) => timestampFromMs(ms);

/** Epoch ms of the given UTC date parts. */
export const utc = (year: number, month0: number, day: number, hour = 0) => Date.UTC(year, month0, day, hour);

/** Creates a USD plan: monthly (and optionally yearly) price, trial days and metered components. */
export async function createPlan(
  client: BillingClient,
  plan: {
    name?: string;
    monthly: bigint;
    yearly?: bigint;
    trialDays?: number;
    metered?: Array<{ metric: string; unitPrice: bigint; included: bigint }>;
    maxOrderValue?: bigint;
    currency?: string;
  },
) {
  const currency = plan.currency ?? "USD";
  const prices = [
    create(PriceSchema, { interval: PlanInterval.MONTH, amount: { amountMinor: plan.monthly, currency } }),
  ];
  if (plan.yearly !== undefined) {
    prices.push(
      create(PriceSchema, { interval: PlanInterval.YEAR, amount: { amountMinor: plan.yearly, currency } }),
    );
  }
  const response = await client.createPlan({
    name: plan.name ?? "Pro",
    currency,
    prices,
    trialDays: plan.trialDays ?? 0,
    meteredComponents: (plan.metered ?? []).map((m) =>
      create(MeteredComponentSchema, {
        metric: m.metric,
        unitPrice: { amountMinor: m.unitPrice, currency },
        includedQuantity: m.included,
      }),
    ),
    maxOrderValue:
      plan.maxOrderValue === undefined ? undefined : { amountMinor: plan.maxOrderValue, currency },
    idempotencyKey: uniqueName("plan"),
  });
  if (!response.plan) throw new Error("no plan");
  return response.plan;
}

/** A fresh idempotency key. */
export const key = () => uniqueName("key");
