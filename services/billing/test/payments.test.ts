import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ChargeStatus,
  PaymentFailureCode,
  PlanInterval,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { createPlan, type Harness, key, newTenant, startBilling } from "./support.ts";

const usd = (amountMinor: bigint) => ({ amountMinor, currency: "USD" });
const codeOf = (e: unknown) => ConnectError.from(e).code;
const rejectsWith = (p: Promise<unknown>, code: Code) =>
  assert.rejects(p, (e: unknown) => codeOf(e) === code);

describe("Charge, Refund and RecordUsage", () => {
  let h: Harness;
  before(async () => {
    h = await startBilling();
  });
  after(() => h?.close());

  const chargeRows = async (tenant: string) =>
    (
      await h.store.sql<{ n: number }[]>`select count(*)::int as n from charges where tenant_id = ${tenant}`
    )[0]?.n;

  test("a charge retried concurrently with one key charges once", async () => {
    const tenant = newTenant();
    const core = h.service("core");
    const request = {
      tenantId: tenant,
      amount: usd(4599n),
      idempotencyKey: key(),
      paymentMethod: "pm_card_visa",
      description: "order 1",
      metadata: { order_id: "ord_1", sku: "x" },
    };
    const [callsBefore, takenBefore] = [h.provider.chargeCalls, h.provider.chargesTaken];
    const answers = await Promise.all(Array.from({ length: 20 }, () => core.charge(request)));
    const ids = new Set(answers.map((a) => a.charge?.chargeId));
    assert.equal(ids.size, 1);
    assert.equal(answers[0]?.charge?.status, ChargeStatus.SUCCEEDED);
    assert.equal(answers[0]?.charge?.amount?.amountMinor, 4599n);
    assert.deepEqual(answers[0]?.charge?.metadata, { order_id: "ord_1", sku: "x" });
    assert.equal(await chargeRows(tenant), 1);
    assert.equal(h.provider.chargesTaken - takenBefore, 1);
    assert.equal(h.provider.chargeCalls - callsBefore, 1);

    // Metadata order does not make a different request; a different amount does.
    const reordered = await core.charge({ ...request, metadata: { sku: "x", order_id: "ord_1" } });
    assert.equal(reordered.charge?.chargeId, answers[0]?.charge?.chargeId);
    await rejectsWith(core.charge({ ...request, amount: usd(4600n) }), Code.FailedPrecondition);
    assert.equal(await chargeRows(tenant), 1);
  });

  test("declines are answers, repeated for a retried key; a timeout is unavailable with nothing recorded", async () => {
    const tenant = newTenant();
    const core = h.service("core");
    const declined = {
      tenantId: tenant,
      amount: usd(100n),
      idempotencyKey: key(),
      paymentMethod: "pm_card_declined",
    };
    const first = await core.charge(declined);
    assert.equal(first.charge?.status, ChargeStatus.FAILED);
    assert.equal(first.charge?.failureCode, PaymentFailureCode.CARD_DECLINED);
    assert.equal((await core.charge(declined)).charge?.chargeId, first.charge?.chargeId);
    const poor = await core.charge({
      ...declined,
      idempotencyKey: key(),
      paymentMethod: "pm_card_insufficient_funds",
    });
    assert.equal(poor.charge?.failureCode, PaymentFailureCode.INSUFFICIENT_FUNDS);
    assert.equal(await chargeRows(tenant), 2);

    const slow = {
      tenantId: tenant,
      amount: usd(100n),
      idempotencyKey: key(),
      paymentMethod: "pm_card_timeout",
    };
    await rejectsWith(core.charge(slow), Code.Unavailable);
    await rejectsWith(core.charge(slow), Code.Unavailable);
    assert.equal(await chargeRows(tenant), 2);

    await rejectsWith(
      core.charge({ ...slow, idempotencyKey: key(), paymentMethod: "pm_card_unknown" }),
      Code.InvalidArgument,
    );
    // The contract's pattern makes the payment method required.
    await rejectsWith(
      core.charge({ ...slow, idempotencyKey: key(), paymentMethod: "" }),
      Code.InvalidArgument,
    );
  });

  test("a charge to an attached payment method records its id", async () => {
    const tenant = newTenant();
    const user = await h.user(tenant);
    const pm = (await user.attachPaymentMethod({ token: "pm_card_mastercard", idempotencyKey: key() }))
      .paymentMethod;
    assert.equal(pm?.isDefault, true);
    assert.equal(pm?.brand, "mastercard");
    const core = h.service("core");
    const byId = await core.charge({
      tenantId: tenant,
      amount: usd(50n),
      idempotencyKey: key(),
      paymentMethod: pm?.paymentMethodId ?? "",
    });
    assert.equal(byId.charge?.paymentMethod, pm?.paymentMethodId);
    assert.equal(byId.charge?.status, ChargeStatus.SUCCEEDED);
  });

  test("refunds: partial, the rest, then nothing left; over-refunds and failed charges are refused", async () => {
    const tenant = newTenant();
    const core = h.service("core");
    const charge = (
      await core.charge({
        tenantId: tenant,
        amount: usd(1000n),
        idempotencyKey: key(),
        paymentMethod: "pm_card_visa",
      })
    ).charge;
    const chargeId = charge?.chargeId ?? "";
    const partialKey = key();
    const partial = await core.refund({
      tenantId: tenant,
      chargeId,
      amount: usd(300n),
      idempotencyKey: partialKey,
      reason: "item",
    });
    assert.equal(partial.refund?.amount?.amountMinor, 300n);
    assert.equal(partial.charge?.status, ChargeStatus.PARTIALLY_REFUNDED);
    assert.equal(partial.charge?.amountRefunded?.amountMinor, 300n);
    // The same key again is the same refund, not a second one.
    const again = await core.refund({
      tenantId: tenant,
      chargeId,
      amount: usd(300n),
      idempotencyKey: partialKey,
      reason: "item",
    });
    assert.equal(again.refund?.refundId, partial.refund?.refundId);

    await rejectsWith(
      core.refund({ tenantId: tenant, chargeId, amount: usd(701n), idempotencyKey: key() }),
      Code.FailedPrecondition,
    );
    await rejectsWith(
      core.refund({
        tenantId: tenant,
        chargeId,
        amount: { amountMinor: 5n, currency: "EUR" },
        idempotencyKey: key(),
      }),
      Code.InvalidArgument,
    );
    const rest = await core.refund({ tenantId: tenant, chargeId, idempotencyKey: key() });
    assert.equal(rest.refund?.amount?.amountMinor, 700n);
    assert.equal(rest.charge?.status, ChargeStatus.REFUNDED);
    assert.equal(rest.charge?.amountRefunded?.amountMinor, 1000n);
    await rejectsWith(
      core.refund({ tenantId: tenant, chargeId, amount: usd(1n), idempotencyKey: key() }),
      Code.FailedPrecondition,
    );
    await rejectsWith(
      core.refund({ tenantId: tenant, chargeId, idempotencyKey: key() }),
      Code.FailedPrecondition,
    );

    const rows = await h.store.sql<{ n: number; sum: bigint }[]>`
      select count(*)::int as n, sum(amount_minor)::bigint as sum from refunds where charge_id = ${chargeId}`;
    assert.deepEqual([rows[0]?.n, rows[0]?.sum], [2, 1000n]);

    const failed = (
      await core.charge({
        tenantId: tenant,
        amount: usd(10n),
        idempotencyKey: key(),
        paymentMethod: "pm_card_declined",
      })
    ).charge;
    await rejectsWith(
      core.refund({ tenantId: tenant, chargeId: failed?.chargeId ?? "", idempotencyKey: key() }),
      Code.FailedPrecondition,
    );
    await rejectsWith(
      core.refund({ tenantId: tenant, chargeId: "ch_nope", idempotencyKey: key() }),
      Code.NotFound,
    );
  });

  test("concurrent refunds never exceed the charge", async () => {
    const tenant = newTenant();
    const core = h.service("core");
    const charge = (
      await core.charge({
        tenantId: tenant,
        amount: usd(1000n),
        idempotencyKey: key(),
        paymentMethod: "pm_card_visa",
      })
    ).charge;
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () =>
        core.refund({
          tenantId: tenant,
          chargeId: charge?.chargeId ?? "",
          amount: usd(300n),
          idempotencyKey: key(),
        }),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled").length;
    assert.equal(ok, 3);
    for (const r of results)
      if (r.status === "rejected") assert.equal(codeOf(r.reason), Code.FailedPrecondition);
  });

  test("RecordUsage retried concurrently with one key records once", async () => {
    const tenant = newTenant();
    const user = await h.user(tenant);
    const plan = await createPlan(user, {
      monthly: 0n,
      metered: [{ metric: "api.calls", unitPrice: 1n, included: 0n }],
    });
    await user.createSubscription({
      planId: plan.planId,
      interval: PlanInterval.MONTH,
      idempotencyKey: key(),
    });
    const request = { metric: "api.calls", quantity: 7n, idempotencyKey: key() };
    const answers = await Promise.all(Array.from({ length: 20 }, () => user.recordUsage(request)));
    assert.equal(new Set(answers.map((a) => a.usageRecord?.usageRecordId)).size, 1);
    assert.equal(await h.store.countUsage(tenant), 1);
    await rejectsWith(user.recordUsage({ ...request, quantity: 8n }), Code.FailedPrecondition);
    await rejectsWith(
      user.recordUsage({ ...request, idempotencyKey: key(), metric: "storage.gb" }),
      Code.FailedPrecondition,
    );
    assert.equal(await h.store.countUsage(tenant), 1);
  });

  test("only core may call the internal RPCs", async () => {
    const tenant = newTenant();
    const request = {
      tenantId: tenant,
      amount: usd(100n),
      idempotencyKey: key(),
      paymentMethod: "pm_card_visa",
    };
    const user = await h.user(tenant);
    await rejectsWith(user.charge(request), Code.PermissionDenied);
    await rejectsWith(h.service("analytics").charge(request), Code.PermissionDenied);
    await rejectsWith(
      h.service("analytics").getTenantBillingStatus({ tenantId: tenant }),
      Code.PermissionDenied,
    );
    await rejectsWith(
      user.refund({ tenantId: tenant, chargeId: "ch_x", idempotencyKey: key() }),
      Code.PermissionDenied,
    );
    assert.equal(await chargeRows(tenant), 0);
  });
});
