import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type InvoiceStatus, PlanInterval, PriceSchema } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { at, type BillingClient, createPlan, type Harness, key, newTenant, startBilling } from "./support.ts";

const usd = (amountMinor: bigint, currency = "USD") => ({ amountMinor, currency });
const monthly = (amountMinor: bigint, currency = "USD") =>
  create(PriceSchema, { interval: PlanInterval.MONTH, amount: usd(amountMinor, currency) });

describe("bad input on every RPC is invalid_argument and writes nothing", () => {
  let h: Harness;
  let c: BillingClient;
  let tenant: string;
  let planId: string;
  before(async () => {
    h = await startBilling();
    tenant = newTenant();
    c = await h.user(tenant);
    planId = (
      await createPlan(c, { monthly: 100n, metered: [{ metric: "api.calls", unitPrice: 1n, included: 0n }] })
    ).planId;
    await c.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() });
    await c.createSubscription({ planId, interval: PlanInterval.MONTH, idempotencyKey: key() });
  });
  after(() => h?.close());

  const long = "x".repeat(65);
  const core = () => h.service("core");
  const cases: Array<[string, () => Promise<unknown>]> = [
    ["ListPlans page size over 500", () => c.listPlans({ page: { pageSize: 501 } })],
    ["ListPlans forged page token", () => c.listPlans({ page: { pageToken: "not-a-token" } })],
    [
      "CreatePlan lower-case currency",
      () => c.createPlan({ name: "P", currency: "usd", prices: [monthly(1n, "usd")], idempotencyKey: key() }),
    ],
    [
      "CreatePlan without prices",
      () => c.createPlan({ name: "P", currency: "USD", prices: [], idempotencyKey: key() }),
    ],
    [
      "CreatePlan price in another currency",
      () => c.createPlan({ name: "P", currency: "USD", prices: [monthly(1n, "EUR")], idempotencyKey: key() }),
    ],
    [
      "CreatePlan negative price",
      () => c.createPlan({ name: "P", currency: "USD", prices: [monthly(-1n)], idempotencyKey: key() }),
    ],
    [
      "CreatePlan two monthly prices",
      () =>
        c.createPlan({
          name: "P",
          currency: "USD",
          prices: [monthly(1n), monthly(2n)],
          idempotencyKey: key(),
        }),
    ],
    [
      "CreatePlan without idempotency key",
      () => c.createPlan({ name: "P", currency: "USD", prices: [monthly(1n)] }),
    ],
    [
      "CreateSubscription unspecified interval",
      () => c.createSubscription({ planId, idempotencyKey: key() }),
    ],
    [
      "CreateSubscription empty plan",
      () => c.createSubscription({ planId: "", interval: PlanInterval.MONTH, idempotencyKey: key() }),
    ],
    ["GetSubscription id too long", () => c.getSubscription({ subscriptionId: long })],
    [
      "ChangePlan without key",
      () => c.changePlan({ subscriptionId: "sub_x", planId, interval: PlanInterval.MONTH }),
    ],
    [
      "ChangePlan interval out of range",
      () =>
        c.changePlan({ subscriptionId: "sub_x", planId, interval: 7 as PlanInterval, idempotencyKey: key() }),
    ],
    [
      "CancelSubscription empty id",
      () => c.cancelSubscription({ subscriptionId: "", idempotencyKey: key() }),
    ],
    [
      "AttachPaymentMethod token with spaces",
      () => c.attachPaymentMethod({ token: "pm card", idempotencyKey: key() }),
    ],
    [
      "AttachPaymentMethod unknown token",
      () => c.attachPaymentMethod({ token: "pm_card_unknown", idempotencyKey: key() }),
    ],
    ["ListPaymentMethods negative page size", () => c.listPaymentMethods({ page: { pageSize: -1 } })],
    [
      "Charge zero amount",
      () =>
        core().charge({
          tenantId: tenant,
          amount: usd(0n),
          paymentMethod: "pm_card_visa",
          idempotencyKey: key(),
        }),
    ],
    [
      "Charge without amount",
      () => core().charge({ tenantId: tenant, paymentMethod: "pm_card_visa", idempotencyKey: key() }),
    ],
    [
      "Charge without tenant",
      () =>
        core().charge({
          tenantId: "",
          amount: usd(1n),
          paymentMethod: "pm_card_visa",
          idempotencyKey: key(),
        }),
    ],
    [
      "Charge bad metadata key",
      () =>
        core().charge({
          tenantId: tenant,
          amount: usd(1n),
          paymentMethod: "pm_card_visa",
          idempotencyKey: key(),
          metadata: { "Bad-Key": "v" },
        }),
    ],
    [
      "Refund zero amount",
      () => core().refund({ tenantId: tenant, chargeId: "ch_x", amount: usd(0n), idempotencyKey: key() }),
    ],
    [
      "Refund empty charge id",
      () => core().refund({ tenantId: tenant, chargeId: "", idempotencyKey: key() }),
    ],
    ["GetTenantBillingStatus empty tenant", () => core().getTenantBillingStatus({ tenantId: "" })],
    [
      "RecordUsage zero quantity",
      () => c.recordUsage({ metric: "api.calls", quantity: 0n, idempotencyKey: key() }),
    ],
    [
      "RecordUsage upper-case metric",
      () => c.recordUsage({ metric: "API", quantity: 1n, idempotencyKey: key() }),
    ],
    [
      "RecordUsage in the future",
      () =>
        c.recordUsage({
          metric: "api.calls",
          quantity: 1n,
          idempotencyKey: key(),
          timestamp: at(Date.now() + 3_600_000),
        }),
    ],
    [
      "RecordUsage before the period",
      () =>
        c.recordUsage({
          metric: "api.calls",
          quantity: 1n,
          idempotencyKey: key(),
          timestamp: at(Date.now() - 40 * 86_400_000),
        }),
    ],
    ["ListInvoices undefined status", () => c.listInvoices({ status: 42 as InvoiceStatus })],
    ["GetInvoice empty id", () => c.getInvoice({ invoiceId: "" })],
    ["GetInvoiceDocument unspecified format", () => c.getInvoiceDocument({ invoiceId: "in_x" })],
    ["VoidInvoice without key", () => c.voidInvoice({ invoiceId: "in_x" })],
    ["AdvanceClock without a time", () => c.advanceClock({})],
  ];

  const counts = async () =>
    (
      await h.store.sql<{ n: string }[]>`select concat_ws(',',
        (select count(*) from plans), (select count(*) from subscriptions), (select count(*) from charges),
        (select count(*) from refunds), (select count(*) from usage_records), (select count(*) from payment_methods),
        (select count(*) from idempotency_keys), (select count(*) from outbox)) as n`
    )[0]?.n;

  for (const [name, call] of cases) {
    test(name, async () => {
      const before = await counts();
      await assert.rejects(call(), (e: unknown) => ConnectError.from(e).code === Code.InvalidArgument);
      assert.equal(await counts(), before);
    });
  }

  test("GetClock has no input to get wrong; it answers the tenant's clock", async () => {
    assert.ok((await c.getClock({})).now);
  });

  test("user RPCs need a token and the permission", async () => {
    const reader = await h.user(tenant, ["billing.invoices.read"]);
    await assert.rejects(
      reader.createPlan({ name: "P", currency: "USD", prices: [monthly(1n)], idempotencyKey: key() }),
      (e: unknown) => ConnectError.from(e).code === Code.PermissionDenied,
    );
    await assert.rejects(
      reader.advanceClock({ advanceTo: at(Date.now() + 1000) }),
      (e: unknown) => ConnectError.from(e).code === Code.PermissionDenied,
    );
    assert.ok(await reader.listInvoices({}));
    await assert.rejects(
      h.service("core").listInvoices({}),
      (e: unknown) => ConnectError.from(e).code === Code.Unauthenticated,
    );
  });
});
