import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { PlanInterval } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { newId } from "../src/ids.ts";
import type { InvoiceRow, SubscriptionRow } from "../src/store.ts";
import { at, createPlan, type Harness, key, newTenant, startBilling, utc } from "./support.ts";

describe("per-tenant invoice numbers", () => {
  let h: Harness;
  before(async () => {
    h = await startBilling();
  });
  after(() => h?.close());

  const numbersOf = async (tenant: string) =>
    (
      await h.store.sql<
        { number: bigint }[]
      >`select number from invoices where tenant_id = ${tenant} and number is not null
        order by number`
    ).map((r) => Number(r.number));
  const oneTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

  test("many tenants advanced concurrently, several advances per tenant at once: gap-free and unique", async () => {
    const admin = await h.user(newTenant());
    const plan = await createPlan(admin, { monthly: 1000n });
    const year = new Date().getUTCFullYear() + 1;
    const tenants = Array.from({ length: 8 }, () => newTenant());
    const clients = await Promise.all(tenants.map((t) => h.user(t)));
    await Promise.all(
      clients.map(async (c) => {
        await c.advanceClock({ advanceTo: at(utc(year, 0, 1)) });
        await c.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() });
        await c.createSubscription({
          planId: plan.planId,
          interval: PlanInterval.MONTH,
          idempotencyKey: key(),
        });
      }),
    );
    // Three overlapping advances per tenant, all tenants at once.
    await Promise.all(
      clients.flatMap((c) =>
        [3, 12, 6].map((month) => c.advanceClock({ advanceTo: at(utc(year, month, 1, 12)) })),
      ),
    );
    for (const tenant of tenants) assert.deepEqual(await numbersOf(tenant), oneTo(13), tenant);
  });

  test("concurrent finalizations of one tenant, some rolled back: the committed numbers have no gaps", async () => {
    const tenant = newTenant();
    const admin = await h.user(tenant);
    const plan = await createPlan(admin, { monthly: 1000n });
    const now = new Date(utc(new Date().getUTCFullYear() + 1, 0, 1));
    await h.store.lockCustomer(tenant);
    const drafts: InvoiceRow[] = [];
    for (let i = 0; i < 30; i++) {
      // Ended subscriptions, so one tenant may hold many, each with its own draft.
      const sub: SubscriptionRow = {
        id: newId("sub"),
        tenant_id: tenant,
        plan_id: plan.planId,
        interval: "month",
        status: "canceled",
        payment_method_id: null,
        trial_ends_at: null,
        billing_anchor: now,
        current_period_start: now,
        current_period_end: now,
        cancel_at_period_end: false,
        canceled_at: now,
        cancellation_reason: "requested",
        created_at: now,
      };
      await h.store.insertSubscription(sub);
      const draft: InvoiceRow = {
        id: newId("in"),
        tenant_id: tenant,
        subscription_id: sub.id,
        plan_id: plan.planId,
        number: null,
        status: "draft",
        currency: "USD",
        subtotal_minor: 0n,
        tax_rate_bps: 0,
        tax_minor: 0n,
        total_minor: 0n,
        amount_paid_minor: 0n,
        period_start: now,
        period_end: now,
        attempt_count: 0,
        next_payment_attempt_at: null,
        created_at: now,
        finalized_at: null,
        paid_at: null,
        voided_at: null,
      };
      await h.store.insertInvoice(draft);
      drafts.push(draft);
    }
    const finalizeAll = (batch: InvoiceRow[], failEvery: number) =>
      Promise.allSettled(
        batch.map((draft, i) =>
          h.store.transaction(async (s) => {
            await s.finalizeInvoice(draft, now, 0, () => 0n);
            if (failEvery > 0 && i % failEvery === 0) throw new Error("rolled back on purpose");
          }),
        ),
      );
    const first = await finalizeAll(drafts, 3);
    const rolledBack = drafts.filter((_, i) => first[i]?.status === "rejected");
    assert.equal(rolledBack.length, 10);
    assert.deepEqual(await numbersOf(tenant), oneTo(20));
    await finalizeAll(rolledBack, 0);
    assert.deepEqual(await numbersOf(tenant), oneTo(30));
  });
});
