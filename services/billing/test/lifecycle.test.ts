import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CancellationReason,
  InvoiceLineKind,
  InvoiceStatus,
  PlanInterval,
  SubscriptionStatus,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import pino from "pino";
import { startScheduler } from "../src/scheduler.ts";
import {
  at,
  createPlan,
  futureYearStart,
  type Harness,
  key,
  newTenant,
  startBilling,
  utc,
} from "./support.ts";

const DAY = 86_400_000;
const HOUR = 3_600_000;

async function rejectsWith(promise: Promise<unknown>, code: Code) {
  await assert.rejects(promise, (error: unknown) => ConnectError.from(error).code === code);
}

describe("a tenant's months on the billing clock", () => {
  let h: Harness;
  before(async () => {
    h = await startBilling({ BILLING_TAX_RATE_BPS: "1000", BILLING_DUNNING_RETRY_DAYS: "1,3,5" });
  });
  after(() => h?.close());

  test("trial, first paid invoice, usage invoice, failed payment, dunning, cancel", async () => {
    const tenant = newTenant();
    const c = await h.user(tenant);
    const year = new Date(futureYearStart()).getUTCFullYear();
    const base = utc(year, 0, 1);
    await c.advanceClock({ advanceTo: at(base) });
    assert.equal(timestampMs((await c.getClock({})).now ?? at(0)), base);

    const plan = await createPlan(c, {
      monthly: 2000n,
      trialDays: 14,
      metered: [{ metric: "api.calls", unitPrice: 5n, included: 1000n }],
    });
    await c.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() });
    const created = await c.createSubscription({
      planId: plan.planId,
      interval: PlanInterval.MONTH,
      idempotencyKey: key(),
    });
    const sub = created.subscription;
    assert.ok(sub);
    assert.equal(sub.status, SubscriptionStatus.TRIALING);
    assert.equal(timestampMs(sub.trialEndsAt ?? at(0)), base + 14 * DAY);
    assert.equal(timestampMs(sub.currentPeriodEnd ?? at(0)), base + 14 * DAY);

    // Usage during the trial is not billed.
    await c.recordUsage({ metric: "api.calls", quantity: 5000n, idempotencyKey: key() });
    assert.equal((await c.listInvoices({})).invoices.length, 0);

    // Trial ends on Jan 15: the first paid period is invoiced and collected.
    const trialEnd = base + 14 * DAY;
    let step = await c.advanceClock({ advanceTo: at(trialEnd + HOUR) });
    assert.deepEqual(
      [step.invoicesFinalized, step.paymentAttempts, step.subscriptionsRenewed, step.subscriptionsCanceled],
      [1, 1, 1, 0],
    );
    let current = (await c.getSubscription({})).subscription;
    assert.equal(current?.status, SubscriptionStatus.ACTIVE);
    assert.equal(timestampMs(current?.currentPeriodStart ?? at(0)), trialEnd);
    const secondEnd = utc(year, 1, 15);
    assert.equal(timestampMs(current?.currentPeriodEnd ?? at(0)), secondEnd);
    let invoices = (await c.listInvoices({})).invoices;
    assert.equal(invoices.length, 1);
    const first = invoices[0];
    assert.equal(first?.number, 1n);
    assert.equal(first?.status, InvoiceStatus.PAID);
    assert.deepEqual(
      first?.lines.map((l) => [l.kind, l.amount?.amountMinor]),
      [[InvoiceLineKind.SUBSCRIPTION, 2000n]],
    );
    assert.equal(first?.subtotal?.amountMinor, 2000n);
    assert.equal(first?.tax?.amountMinor, 200n);
    assert.equal(first?.total?.amountMinor, 2200n);
    assert.equal(first?.amountDue?.amountMinor, 0n);
    assert.equal(first?.amountPaid?.amountMinor, 2200n);

    // Usage in the first paid period: 1800 calls, 1000 included, 800 × 5 billed with the next fee.
    await c.recordUsage({ metric: "api.calls", quantity: 1500n, idempotencyKey: key() });
    await c.recordUsage({
      metric: "api.calls",
      quantity: 300n,
      idempotencyKey: key(),
      timestamp: at(trialEnd + HOUR),
    });
    step = await c.advanceClock({ advanceTo: at(secondEnd + HOUR) });
    assert.equal(step.invoicesFinalized, 1);
    invoices = (await c.listInvoices({})).invoices;
    assert.deepEqual(
      invoices.map((i) => i.number),
      [2n, 1n],
    );
    const second = invoices[0];
    assert.equal(second?.status, InvoiceStatus.PAID);
    const usage = second?.lines.find((l) => l.kind === InvoiceLineKind.USAGE);
    assert.equal(usage?.metric, "api.calls");
    assert.equal(usage?.quantity, 800n);
    assert.equal(usage?.unitAmount?.amountMinor, 5n);
    assert.equal(usage?.amount?.amountMinor, 4000n);
    assert.equal(second?.subtotal?.amountMinor, 6000n);
    assert.equal(second?.total?.amountMinor, 6600n);

    const doc = await c.getInvoiceDocument({ invoiceId: second?.invoiceId ?? "", format: 1 });
    assert.equal(doc.contentType, "text/html; charset=utf-8");
    const html = new TextDecoder().decode(doc.content);
    assert.match(html, /Invoice 2/);
    assert.match(html, /66\.00 USD/);
    const pdf = await c.getInvoiceDocument({ invoiceId: second?.invoiceId ?? "", format: 2 });
    assert.equal(pdf.contentType, "application/pdf");
    assert.equal(pdf.filename, "invoice-2.pdf");
    assert.equal(new TextDecoder().decode(pdf.content.subarray(0, 5)), "%PDF-");
    assert.match(new TextDecoder("latin1").decode(pdf.content), /%%EOF\s*$/);

    // The card starts failing: the March renewal is declined and dunning begins.
    await c.attachPaymentMethod({ token: "pm_card_declined", setDefault: true, idempotencyKey: key() });
    const thirdEnd = utc(year, 2, 15);
    step = await c.advanceClock({ advanceTo: at(thirdEnd + HOUR) });
    assert.deepEqual([step.invoicesFinalized, step.paymentAttempts, step.subscriptionsRenewed], [1, 1, 1]);
    current = (await c.getSubscription({})).subscription;
    assert.equal(current?.status, SubscriptionStatus.PAST_DUE);
    let third = (await c.listInvoices({})).invoices[0];
    assert.equal(third?.number, 3n);
    assert.equal(third?.status, InvoiceStatus.OPEN);
    assert.equal(third?.attemptCount, 1);
    assert.equal(timestampMs(third?.nextPaymentAttemptAt ?? at(0)), thirdEnd + DAY);
    assert.equal(third?.amountDue?.amountMinor, 2200n);

    // Retry after 1 day fails; the next is 3 days after finalization.
    step = await c.advanceClock({ advanceTo: at(thirdEnd + 2 * DAY) });
    assert.deepEqual([step.paymentAttempts, step.subscriptionsCanceled], [1, 0]);
    third = (await c.getInvoice({ invoiceId: third?.invoiceId ?? "" })).invoice;
    assert.equal(third?.attemptCount, 2);
    assert.equal(timestampMs(third?.nextPaymentAttemptAt ?? at(0)), thirdEnd + 3 * DAY);

    // Days 3 and 5 fail too: the invoice is uncollectible and the subscription canceled.
    step = await c.advanceClock({ advanceTo: at(thirdEnd + 6 * DAY) });
    assert.deepEqual([step.paymentAttempts, step.subscriptionsCanceled], [2, 1]);
    third = (await c.getInvoice({ invoiceId: third?.invoiceId ?? "" })).invoice;
    assert.equal(third?.status, InvoiceStatus.UNCOLLECTIBLE);
    assert.equal(third?.attemptCount, 4);
    assert.equal(third?.nextPaymentAttemptAt, undefined);
    current = (await c.getSubscription({ subscriptionId: sub.subscriptionId })).subscription;
    assert.equal(current?.status, SubscriptionStatus.CANCELED);
    assert.equal(current?.cancellationReason, CancellationReason.PAYMENT_FAILED);
    assert.equal(timestampMs(current?.canceledAt ?? at(0)), thirdEnd + 5 * DAY);

    const status = await h.service("core").getTenantBillingStatus({ tenantId: tenant });
    assert.equal(status.subscriptionStatus, SubscriptionStatus.CANCELED);
    await rejectsWith(
      c.recordUsage({ metric: "api.calls", quantity: 1n, idempotencyKey: key() }),
      Code.FailedPrecondition,
    );

    // Nothing more happens later: no renewals of a canceled subscription.
    step = await c.advanceClock({ advanceTo: at(utc(year, 5, 1)) });
    assert.deepEqual([step.invoicesFinalized, step.paymentAttempts], [0, 0]);
    const failed = await h.store.sql<{ n: number }[]>`select count(*)::int as n from charges
      where tenant_id = ${tenant} and status = 'failed' and failure_code = 'card_declined'`;
    assert.equal(failed[0]?.n, 4);
  });

  test("a payment that fails and is fixed during dunning brings the subscription back to active", async () => {
    const c = await h.user(newTenant());
    const base = futureYearStart(2);
    await c.advanceClock({ advanceTo: at(base) });
    const plan = await createPlan(c, { monthly: 1000n });
    await c.attachPaymentMethod({ token: "pm_card_insufficient_funds", idempotencyKey: key() });
    const sub = (
      await c.createSubscription({ planId: plan.planId, interval: PlanInterval.MONTH, idempotencyKey: key() })
    ).subscription;
    assert.equal(sub?.status, SubscriptionStatus.PAST_DUE);
    const invoice = (await c.listInvoices({})).invoices[0];
    assert.equal(invoice?.status, InvoiceStatus.OPEN);
    const charges = await h.store.sql<
      { failure_code: string }[]
    >`select failure_code from charges where invoice_id = ${invoice?.invoiceId ?? ""}`;
    assert.deepEqual(
      charges.map((r) => r.failure_code),
      ["insufficient_funds"],
    );

    await c.attachPaymentMethod({ token: "pm_card_mastercard", setDefault: true, idempotencyKey: key() });
    const step = await c.advanceClock({ advanceTo: at(base + DAY + HOUR) });
    assert.equal(step.paymentAttempts, 1);
    assert.equal((await c.getSubscription({})).subscription?.status, SubscriptionStatus.ACTIVE);
    const paid = (await c.getInvoice({ invoiceId: invoice?.invoiceId ?? "" })).invoice;
    assert.equal(paid?.status, InvoiceStatus.PAID);
    assert.equal(paid?.attemptCount, 2);
  });

  test("a trial without a payment method fails at trial end with no_payment_method", async () => {
    const c = await h.user(newTenant());
    const base = futureYearStart(2);
    await c.advanceClock({ advanceTo: at(base) });
    const plan = await createPlan(c, { monthly: 1000n, trialDays: 7 });
    await c.createSubscription({ planId: plan.planId, interval: PlanInterval.MONTH, idempotencyKey: key() });
    await c.advanceClock({ advanceTo: at(base + 7 * DAY + HOUR) });
    const invoice = (await c.listInvoices({})).invoices[0];
    assert.equal(invoice?.status, InvoiceStatus.OPEN);
    assert.equal((await c.getSubscription({})).subscription?.status, SubscriptionStatus.PAST_DUE);
    const rows = await h.store.sql`select 1 from charges where invoice_id = ${invoice?.invoiceId ?? ""}`;
    assert.equal(rows.length, 0);
  });

  test("cancel at period end ends it at the period end; cancel now ends it at once", async () => {
    const c = await h.user(newTenant());
    const year = new Date(futureYearStart(2)).getUTCFullYear();
    await c.advanceClock({ advanceTo: at(utc(year, 0, 1)) });
    const plan = await createPlan(c, { monthly: 1000n });
    await c.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() });
    const sub = (
      await c.createSubscription({ planId: plan.planId, interval: PlanInterval.MONTH, idempotencyKey: key() })
    ).subscription;
    assert.equal(sub?.status, SubscriptionStatus.ACTIVE);
    const scheduled = await c.cancelSubscription({
      subscriptionId: sub?.subscriptionId ?? "",
      atPeriodEnd: true,
      idempotencyKey: key(),
    });
    assert.equal(scheduled.subscription?.cancelAtPeriodEnd, true);
    assert.equal(scheduled.subscription?.status, SubscriptionStatus.ACTIVE);
    const step = await c.advanceClock({ advanceTo: at(utc(year, 1, 2)) });
    assert.deepEqual(
      [step.invoicesFinalized, step.subscriptionsRenewed, step.subscriptionsCanceled],
      [0, 0, 1],
    );
    const ended = (await c.getSubscription({})).subscription;
    assert.equal(ended?.status, SubscriptionStatus.CANCELED);
    assert.equal(timestampMs(ended?.canceledAt ?? at(0)), utc(year, 1, 1));
    await rejectsWith(
      c.cancelSubscription({
        subscriptionId: sub?.subscriptionId ?? "",
        atPeriodEnd: false,
        idempotencyKey: key(),
      }),
      Code.FailedPrecondition,
    );

    // A new subscription may start after the old one ended; cancelling it now ends it at once.
    const again = (
      await c.createSubscription({ planId: plan.planId, interval: PlanInterval.MONTH, idempotencyKey: key() })
    ).subscription;
    await rejectsWith(
      c.createSubscription({ planId: plan.planId, interval: PlanInterval.MONTH, idempotencyKey: key() }),
      Code.AlreadyExists,
    );
    const now = await c.cancelSubscription({
      subscriptionId: again?.subscriptionId ?? "",
      atPeriodEnd: false,
      idempotencyKey: key(),
    });
    assert.equal(now.subscription?.status, SubscriptionStatus.CANCELED);
    assert.equal(now.subscription?.cancellationReason, CancellationReason.REQUESTED);
  });

  test("the scheduler renews on the wall clock when nobody advances the tenant's clock", async () => {
    const tenant = newTenant();
    const c = await h.user(tenant);
    const plan = await createPlan(c, { monthly: 700n });
    await c.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() });
    const sub = (
      await c.createSubscription({ planId: plan.planId, interval: PlanInterval.MONTH, idempotencyKey: key() })
    ).subscription;
    // Pretend the period ended a minute ago on the wall clock.
    const ended = new Date(Date.now() - 60_000);
    await h.store.sql`update subscriptions set current_period_end = ${ended}, billing_anchor = ${ended}
      where id = ${sub?.subscriptionId ?? ""}`;
    const scheduler = startScheduler(
      h.store,
      { provider: h.provider, settings: { taxRateBps: 0, dunningRetryMs: [DAY], idempotencyTtlMs: DAY } },
      pino({ level: "silent" }),
      0,
    );
    await scheduler.tick();
    await scheduler.stop();
    const renewed = (await c.getSubscription({})).subscription;
    assert.equal(timestampMs(renewed?.currentPeriodStart ?? at(0)), ended.getTime());
    assert.ok(timestampMs(renewed?.currentPeriodEnd ?? at(0)) > Date.now());
    assert.deepEqual(
      (await c.listInvoices({})).invoices.map((i) => [i.number, i.status]),
      [
        [2n, InvoiceStatus.PAID],
        [1n, InvoiceStatus.PAID],
      ],
    );
  });
});
