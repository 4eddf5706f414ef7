import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { PlanInterval } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { at, createPlan, type Harness, key, newTenant, startBilling } from "./support.ts";

const notFound = (e: unknown) => ConnectError.from(e).code === Code.NotFound;

describe("tenant isolation", () => {
  let h: Harness;
  before(async () => {
    h = await startBilling();
  });
  after(() => h?.close());

  test("another tenant's ids are not_found, and lists and clocks are per tenant", async () => {
    const [a, b] = [newTenant(), newTenant()];
    const ca = await h.user(a);
    const cb = await h.user(b);
    const plan = await createPlan(ca, { monthly: 500n });
    const pm = (await ca.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() })).paymentMethod;
    const sub = (
      await ca.createSubscription({
        planId: plan.planId,
        interval: PlanInterval.MONTH,
        idempotencyKey: key(),
      })
    ).subscription;
    const invoice = (await ca.listInvoices({})).invoices[0];
    const core = h.service("core");
    const charge = (
      await core.charge({
        tenantId: a,
        amount: { amountMinor: 100n, currency: "USD" },
        idempotencyKey: key(),
        paymentMethod: "pm_card_visa",
      })
    ).charge;
    assert.ok(sub && pm && invoice && charge);

    await assert.rejects(cb.getSubscription({ subscriptionId: sub.subscriptionId }), notFound);
    await assert.rejects(cb.getSubscription({}), notFound);
    await assert.rejects(
      cb.changePlan({
        subscriptionId: sub.subscriptionId,
        planId: plan.planId,
        interval: PlanInterval.MONTH,
        idempotencyKey: key(),
      }),
      notFound,
    );
    await assert.rejects(
      cb.cancelSubscription({ subscriptionId: sub.subscriptionId, idempotencyKey: key() }),
      notFound,
    );
    await assert.rejects(cb.getInvoice({ invoiceId: invoice.invoiceId }), notFound);
    await assert.rejects(cb.getInvoiceDocument({ invoiceId: invoice.invoiceId, format: 1 }), notFound);
    await assert.rejects(
      cb.createSubscription({
        planId: plan.planId,
        interval: PlanInterval.MONTH,
        paymentMethodId: pm.paymentMethodId,
        idempotencyKey: key(),
      }),
      notFound,
    );
    await assert.rejects(
      core.refund({ tenantId: b, chargeId: charge.chargeId, idempotencyKey: key() }),
      notFound,
    );
    await assert.rejects(
      core.charge({
        tenantId: b,
        amount: { amountMinor: 1n, currency: "USD" },
        idempotencyKey: key(),
        paymentMethod: pm.paymentMethodId,
      }),
      notFound,
    );
    assert.equal((await cb.listInvoices({})).invoices.length, 0);
    assert.equal((await cb.listPaymentMethods({})).paymentMethods.length, 0);

    // The same idempotency key in two tenants is two requests.
    const shared = key();
    const ra = await core.charge({
      tenantId: a,
      amount: { amountMinor: 7n, currency: "USD" },
      idempotencyKey: shared,
      paymentMethod: "pm_card_visa",
    });
    const rb = await core.charge({
      tenantId: b,
      amount: { amountMinor: 7n, currency: "USD" },
      idempotencyKey: shared,
      paymentMethod: "pm_card_visa",
    });
    assert.notEqual(ra.charge?.chargeId, rb.charge?.chargeId);

    // A's clock moves; B's stays on the wall clock.
    const later = Date.now() + 90 * 86_400_000;
    await ca.advanceClock({ advanceTo: at(later) });
    const bNow = Number((await cb.getClock({})).now?.seconds ?? 0n) * 1000;
    assert.ok(bNow < later - 80 * 86_400_000);
    const status = await core.getTenantBillingStatus({ tenantId: b });
    assert.equal(status.subscriptionId, "");
  });
});
