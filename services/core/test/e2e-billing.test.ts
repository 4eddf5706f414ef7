import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BillingService,
  PlanInterval,
  SubscriptionStatus,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { PaymentRefundedSchema, PaymentSucceededSchema } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { type CoreService, OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";
import {
  createTestDatabase,
  eventually,
  startNatsServer,
  type TestDatabase,
  type TestNatsServer,
  uniqueName,
} from "@trellis/kit/testing.js";
import { connect, type NatsConnection } from "nats";
import {
  createHarness,
  type Harness,
  orderReaches,
  productWithStock,
  sagaSettles,
} from "./support/harness.js";
import { type ServiceProcess, spawnService } from "./support/process.js";

const billingMain = "services/billing/src/main.ts";
const available = existsSync(fileURLToPath(new URL(`../../../${billingMain}`, import.meta.url)));
const codeOf = (e: unknown) => ConnectError.from(e).code;
const { CONFIRMED, FAILED, CANCELLED } = OrderStatus;

// Core and the real billing service, each with its own database, on one private NATS server:
// billing runs as its own process (its main.ts), core in-process with its billing client.
describe("end to end against the real billing service", {
  skip: !available && "billing is not built yet",
}, () => {
  let nats: TestNatsServer;
  let harness: Harness;
  let billingDb: TestDatabase;
  let billing: ServiceProcess;
  let baseUrl: string;
  let nc: NatsConnection;
  const payments: Array<{ subject: string; data: Uint8Array }> = [];

  before(async () => {
    nats = await startNatsServer("/usr/sbin/nats-server");
    harness = await createHarness();
    billingDb = await createTestDatabase("billing_for_core", process.env.TEST_DATABASE_URL);
    billing = await spawnService(billingMain, {
      DATABASE_URL: billingDb.url,
      NATS_URL: nats.url,
      JWKS_URL: harness.jwksUrl,
      JWT_ISSUER: harness.issuer.issuer,
      JWT_AUDIENCE: harness.issuer.audience,
      TRUST_FORWARDED_IDENTITY: "true",
      BILLING_SCHEDULER_INTERVAL_MS: "0",
      BILLING_SANDBOX_TIMEOUT_MS: "5",
    });
    const probe = createClient(BillingService, createGrpcTransport({ baseUrl: billing.baseUrl }));
    await eventually(
      () =>
        probe.listPlans({}).then(
          () => true,
          (e) => codeOf(e) === Code.Unauthenticated,
        ),
      { timeoutMs: 60_000, what: `billing to start: ${billing.output()}` },
    );
    const { instance } = await harness.start({
      natsUrl: nats.url,
      billingUrl: billing.baseUrl,
      env: { CORE_SAGA_CHARGE_ATTEMPTS: "2" },
    });
    baseUrl = instance.baseUrl;
    nc = await connect({ servers: nats.url });
    const sub = nc.subscribe("trellis.billing.payment.>");
    void (async () => {
      for await (const m of sub) payments.push({ subject: m.subject, data: m.data });
    })();
  });

  after(async () => {
    await nc?.close();
    await harness?.close();
    billing?.kill("SIGTERM");
    await billing?.exited;
    await billingDb?.drop();
    await nats?.dispose();
  });

  const billingUser = async (tenantId: string): Promise<Client<typeof BillingService>> => {
    const token = await harness.issuer.sign({
      tid: tenantId,
      perms: ["billing.plans.manage", "billing.subscriptions.manage", "billing.payment_methods.manage"],
    });
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    };
    return createClient(
      BillingService,
      createGrpcTransport({ baseUrl: billing.baseUrl, interceptors: [auth] }),
    );
  };
  const setup = async (
    onHand = 5,
  ): Promise<{ tenant: string; client: Client<typeof CoreService>; productId: string }> => {
    const tenant = uniqueName("tenant");
    const client = await harness.client(baseUrl, tenant);
    return { tenant, client, productId: await productWithStock(client, uniqueName("SKU"), 1500n, onHand) };
  };
  const place = (
    client: Client<typeof CoreService>,
    productId: string,
    paymentMethod: string,
    quantity = 1,
    key?: string,
  ) =>
    client.createOrder({
      items: [{ productId, quantity }],
      paymentMethod,
      idempotencyKey: key ?? uniqueName("k"),
    });
  const succeededFor = (orderId: string) =>
    payments
      .filter((p) => p.subject === "trellis.billing.payment.succeeded")
      .map((p) => fromBinary(PaymentSucceededSchema, p.data))
      .filter((e) => e.metadata.order_id === orderId);

  test("a visa card: confirmed, charged once by billing, repeated key answers the same order", async () => {
    const { client, productId } = await setup();
    const key = uniqueName("same");
    const { order } = await place(client, productId, "pm_card_visa", 2, key);
    const confirmed = await orderReaches(client, order?.orderId ?? "", [CONFIRMED, FAILED]);
    assert.equal(confirmed.status, CONFIRMED);
    assert.match(confirmed.paymentId, /^ch_/);
    const again = await place(client, productId, "pm_card_visa", 2, key);
    assert.equal(again.replayed, true);
    assert.equal(again.order?.orderId, confirmed.orderId);
    const events = await eventually(
      () => succeededFor(confirmed.orderId).length > 0 && succeededFor(confirmed.orderId),
    );
    assert.equal(events.length, 1);
    assert.equal(events[0]?.amount?.amountMinor, 3000n);
    assert.equal(events[0]?.chargeId, confirmed.paymentId);
  });

  test("declined and insufficient-funds cards fail the order and release the stock", async () => {
    const { client, productId } = await setup(2);
    for (const [card, reason] of [
      ["pm_card_declined", "card_declined"],
      ["pm_card_insufficient_funds", "insufficient_funds"],
    ] as const) {
      const { order } = await place(client, productId, card, 2);
      const failed = await orderReaches(client, order?.orderId ?? "", [CONFIRMED, FAILED]);
      assert.equal(failed.failureReason, reason);
    }
    assert.equal((await client.getStock({ productId })).stock?.available, 2n);
  });

  test("a provider that times out: the order fails billing_unavailable with nothing reserved", async () => {
    const { client, productId } = await setup(1);
    const { order } = await place(client, productId, "pm_card_timeout");
    const failed = await orderReaches(client, order?.orderId ?? "", [CONFIRMED, FAILED]);
    assert.equal(failed.failureReason, "billing_unavailable");
    assert.equal((await client.getStock({ productId })).stock?.available, 1n);
    assert.equal(succeededFor(failed.orderId).length, 0);
  });

  test("cancelling a confirmed order refunds the charge in billing", async () => {
    const { client, productId } = await setup();
    const { order } = await place(client, productId, "pm_card_visa", 1);
    const confirmed = await orderReaches(client, order?.orderId ?? "", [CONFIRMED]);
    await client.cancelOrder({ orderId: confirmed.orderId, reason: "e2e" });
    await sagaSettles(harness.sql, confirmed.orderId);
    assert.equal((await client.getOrder({ orderId: confirmed.orderId })).order?.status, CANCELLED);
    const refund = await eventually(() =>
      payments
        .filter((p) => p.subject === "trellis.billing.payment.refunded")
        .map((p) => fromBinary(PaymentRefundedSchema, p.data))
        .find((e) => e.chargeId === confirmed.paymentId),
    );
    assert.equal(refund.amount?.amountMinor, 1500n);
  });

  test("the plan's maximum order value and a past_due subscription come from billing", async () => {
    const subscribe = async (tenant: string, card: string) => {
      const admin = await billingUser(tenant);
      const { plan } = await admin.createPlan({
        name: "Small",
        currency: "USD",
        prices: [{ interval: PlanInterval.MONTH, amount: { amountMinor: 1000n, currency: "USD" } }],
        maxOrderValue: { amountMinor: 4000n, currency: "USD" },
        idempotencyKey: uniqueName("plan"),
      });
      const { paymentMethod } = await admin.attachPaymentMethod({
        token: card,
        setDefault: true,
        idempotencyKey: uniqueName("pm"),
      });
      const { subscription } = await admin.createSubscription({
        planId: plan?.planId ?? "",
        interval: PlanInterval.MONTH,
        paymentMethodId: paymentMethod?.paymentMethodId ?? "",
        idempotencyKey: uniqueName("sub"),
      });
      return subscription?.status;
    };

    const active = await setup(10);
    assert.equal(await subscribe(active.tenant, "pm_card_visa"), SubscriptionStatus.ACTIVE);
    await assert.rejects(
      place(active.client, active.productId, "pm_card_visa", 3),
      (e) => codeOf(e) === Code.FailedPrecondition,
    );
    const { order } = await place(active.client, active.productId, "pm_card_visa", 2);
    assert.equal(
      (await orderReaches(active.client, order?.orderId ?? "", [CONFIRMED, FAILED])).status,
      CONFIRMED,
    );

    // The first period's payment is declined: the subscription starts past_due, and billing's
    // SubscriptionCreated event reaches core's cache.
    const late = await setup(10);
    await place(late.client, late.productId, "pm_card_visa", 1);
    assert.equal(await subscribe(late.tenant, "pm_card_declined"), SubscriptionStatus.PAST_DUE);
    await eventually(
      () =>
        place(late.client, late.productId, "pm_card_visa", 1).then(
          () => false,
          (e) => codeOf(e) === Code.FailedPrecondition,
        ),
      { what: "past_due to block new orders" },
    );
    const [row] = await harness.sql<{ subscription_status: string }[]>`
      select subscription_status from tenant_billing where tenant_id = ${late.tenant}`;
    assert.equal(row?.subscription_status, "past_due");
  });
});
