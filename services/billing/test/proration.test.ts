import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { InvoiceLineKind, InvoiceStatus, PlanInterval } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { formatMoney, mulDivRoundHalfUp, prorate, taxFor } from "../src/money.ts";
import { addIntervals, nextBoundary } from "../src/periods.ts";
import { at, createPlan, type Harness, key, newTenant, startBilling } from "./support.ts";

const DAY = 86_400_000;
const d = (iso: string) => new Date(iso);

describe("proration arithmetic", () => {
  // Expected values worked out by hand: remaining/period of each price, rounded half up on the magnitude.
  const month30 = {
    periodStartMs: Date.UTC(2027, 3, 1),
    periodEndMs: Date.UTC(2027, 4, 1),
    newIntervalMs: 30 * DAY,
  };
  const cases: Array<{
    name: string;
    old: bigint;
    new: bigint;
    changeAt: number;
    credit: bigint;
    charge: bigint;
    span?: object;
  }> = [
    {
      name: "upgrade 10 days into a 30-day month",
      old: 3000n,
      new: 6000n,
      changeAt: Date.UTC(2027, 3, 11),
      credit: -2000n,
      charge: 4000n,
    },
    {
      name: "downgrade 10 days in",
      old: 6000n,
      new: 3000n,
      changeAt: Date.UTC(2027, 3, 11),
      credit: -4000n,
      charge: 2000n,
    },
    {
      name: "thirds round to the nearest cent",
      old: 1000n,
      new: 2000n,
      changeAt: Date.UTC(2027, 3, 21),
      credit: -333n,
      charge: 667n,
    },
    {
      name: "exact halves round up in magnitude",
      old: 1001n,
      new: 3n,
      changeAt: Date.UTC(2027, 3, 16),
      credit: -501n,
      charge: 2n,
    },
    {
      name: "at the period start the whole period moves",
      old: 3000n,
      new: 4500n,
      changeAt: Date.UTC(2027, 3, 1),
      credit: -3000n,
      charge: 4500n,
    },
    {
      name: "at the period end nothing is prorated",
      old: 3000n,
      new: 4500n,
      changeAt: Date.UTC(2027, 4, 1),
      credit: 0n,
      charge: 0n,
    },
    {
      name: "from a free plan",
      old: 0n,
      new: 1500n,
      changeAt: Date.UTC(2027, 3, 16),
      credit: 0n,
      charge: 750n,
    },
    {
      name: "monthly to yearly: the new price per day of a 365-day year",
      old: 1000n,
      new: 10000n,
      changeAt: Date.UTC(2027, 0, 16),
      // 16 of 31 days: 1000·16/31 = 516.13; 10000·16/365 = 438.36
      credit: -516n,
      charge: 438n,
      span: {
        periodStartMs: Date.UTC(2027, 0, 1),
        periodEndMs: Date.UTC(2027, 1, 1),
        newIntervalMs: 365 * DAY,
      },
    },
    {
      name: "amounts beyond 2^53 stay exact",
      old: 9_007_199_254_740_993n,
      new: 0n,
      changeAt: 1,
      credit: -4_503_599_627_370_497n,
      charge: 0n,
      span: { periodStartMs: 0, periodEndMs: 2, newIntervalMs: 2 },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const result = prorate({
        ...month30,
        ...c.span,
        oldAmountMinor: c.old,
        newAmountMinor: c.new,
        changeAtMs: c.changeAt,
      });
      assert.equal(result.creditMinor, c.credit);
      assert.equal(result.chargeMinor, c.charge);
      assert.equal(result.netMinor, c.credit + c.charge);
    });
  }

  const taxes: Array<[bigint, number, bigint]> = [
    [1000n, 1900, 190n],
    [1234n, 1900, 234n], // 234.46
    [5n, 1000, 1n], // 0.5 rounds up
    [4n, 1000, 0n], // 0.4
    [3n, 3333, 1n], // 0.9999
    [0n, 1900, 0n],
    [-500n, 1900, 0n], // no tax on a credit
    [1000n, 0, 0n],
  ];
  for (const [subtotal, bps, expected] of taxes) {
    test(`tax on ${subtotal} at ${bps} bps is ${expected}`, () =>
      assert.equal(taxFor(subtotal, bps), expected));
  }

  test("rounding is symmetric around zero", () => {
    assert.equal(mulDivRoundHalfUp(5n, 1n, 2n), 3n);
    assert.equal(mulDivRoundHalfUp(-5n, 1n, 2n), -3n);
    assert.equal(mulDivRoundHalfUp(-4n, 1n, 3n), -1n);
  });

  test("calendar periods clamp to month end without drifting", () => {
    assert.deepEqual(addIntervals(d("2027-01-31T10:00:00Z"), "month", 1), d("2027-02-28T10:00:00Z"));
    assert.deepEqual(addIntervals(d("2028-01-31T10:00:00Z"), "month", 1), d("2028-02-29T10:00:00Z"));
    assert.deepEqual(addIntervals(d("2028-02-29T00:00:00Z"), "year", 1), d("2029-02-28T00:00:00Z"));
    assert.deepEqual(addIntervals(d("2027-11-15T00:00:00Z"), "month", 3), d("2028-02-15T00:00:00Z"));
    assert.deepEqual(
      nextBoundary(d("2027-01-31T00:00:00Z"), "month", d("2027-02-28T00:00:00Z")),
      d("2027-03-31T00:00:00Z"),
    );
    assert.deepEqual(
      nextBoundary(d("2027-01-31T00:00:00Z"), "month", d("2027-01-31T00:00:00Z")),
      d("2027-02-28T00:00:00Z"),
    );
    assert.deepEqual(
      nextBoundary(d("2027-01-01T00:00:00Z"), "year", d("2031-06-01T00:00:00Z")),
      d("2032-01-01T00:00:00Z"),
    );
  });

  test("money is formatted from minor units with the currency's exponent", () => {
    assert.equal(formatMoney(123456n, "USD"), "1,234.56 USD");
    assert.equal(formatMoney(-5n, "EUR"), "-0.05 EUR");
    assert.equal(formatMoney(1500n, "JPY"), "1,500 JPY");
  });
});

describe("ChangePlan over RPC", () => {
  let h: Harness;
  before(async () => {
    h = await startBilling();
  });
  after(() => h?.close());

  test("proration lines land on the next invoice, matching the arithmetic", async () => {
    const c = await h.user(newTenant());
    const year = new Date().getUTCFullYear() + 1;
    const start = Date.UTC(year, 3, 1); // April: 30 days
    await c.advanceClock({ advanceTo: at(start) });
    const basic = await createPlan(c, { name: "Basic", monthly: 3000n });
    const pro = await createPlan(c, { name: "Pro", monthly: 6000n, yearly: 60000n });
    await c.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() });
    const sub = (
      await c.createSubscription({
        planId: basic.planId,
        interval: PlanInterval.MONTH,
        idempotencyKey: key(),
      })
    ).subscription;
    await c.advanceClock({ advanceTo: at(start + 10 * DAY) });
    const changeKey = key();
    const request = {
      subscriptionId: sub?.subscriptionId ?? "",
      planId: pro.planId,
      interval: PlanInterval.MONTH,
      idempotencyKey: changeKey,
    };
    const changed = await c.changePlan(request);
    assert.equal(changed.proration?.amountMinor, 2000n);
    assert.equal(changed.subscription?.planId, pro.planId);
    // A retry answers the first result; the same key for another change is refused.
    assert.equal((await c.changePlan(request)).proration?.amountMinor, 2000n);
    await assert.rejects(
      c.changePlan({ ...request, planId: basic.planId }),
      (e: unknown) => ConnectError.from(e).code === Code.FailedPrecondition,
    );

    const draft = (await c.listInvoices({ status: InvoiceStatus.DRAFT })).invoices[0];
    assert.deepEqual(
      draft?.lines.map((l) => [l.kind, l.amount?.amountMinor]),
      [
        [InvoiceLineKind.PRORATION, -2000n],
        [InvoiceLineKind.PRORATION, 4000n],
      ],
    );
    assert.equal(draft?.number, 0n);

    await c.advanceClock({ advanceTo: at(Date.UTC(year, 4, 1, 1)) });
    const renewal = await c.getInvoice({ invoiceId: draft?.invoiceId ?? "" });
    assert.equal(renewal.invoice?.status, InvoiceStatus.PAID);
    assert.equal(renewal.invoice?.number, 2n);
    assert.deepEqual(
      renewal.invoice?.lines.map((l) => [l.kind, l.amount?.amountMinor]),
      [
        [InvoiceLineKind.PRORATION, -2000n],
        [InvoiceLineKind.PRORATION, 4000n],
        [InvoiceLineKind.SUBSCRIPTION, 6000n],
      ],
    );
    assert.equal(renewal.invoice?.total?.amountMinor, 8000n);
  });

  test("a credit larger than the next invoice carries over instead of being charged", async () => {
    const c = await h.user(newTenant());
    const year = new Date().getUTCFullYear() + 1;
    const start = Date.UTC(year, 3, 1);
    await c.advanceClock({ advanceTo: at(start) });
    const big = await createPlan(c, { name: "Big", monthly: 30000n });
    const free = await createPlan(c, { name: "Free", monthly: 0n });
    await c.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() });
    const sub = (
      await c.createSubscription({ planId: big.planId, interval: PlanInterval.MONTH, idempotencyKey: key() })
    ).subscription;
    await c.advanceClock({ advanceTo: at(start + 15 * DAY) });
    const changed = await c.changePlan({
      subscriptionId: sub?.subscriptionId ?? "",
      planId: free.planId,
      interval: PlanInterval.MONTH,
      idempotencyKey: key(),
    });
    assert.equal(changed.proration?.amountMinor, -15000n);
    await c.advanceClock({ advanceTo: at(Date.UTC(year, 4, 1, 1)) });
    const [next, renewal] = (await c.listInvoices({})).invoices;
    assert.equal(renewal?.status, InvoiceStatus.PAID);
    assert.equal(renewal?.total?.amountMinor, -15000n);
    assert.equal(renewal?.amountDue?.amountMinor, 0n);
    assert.equal(next?.status, InvoiceStatus.DRAFT);
    assert.deepEqual(
      next?.lines.map((l) => l.amount?.amountMinor),
      [-15000n],
    );
  });
});
