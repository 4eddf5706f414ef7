import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  InvoiceStatus,
  PlanInterval,
  SubscriptionStatus,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { InvoiceVoidedSchema, SubscriptionUpdatedSchema } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { eventually, uniqueName } from "@trellis/kit/testing.js";
import { AckPolicy, connect, type NatsConnection } from "nats";
import {
  at,
  type BillingClient,
  createPlan,
  futureYearStart,
  type Harness,
  key,
  newTenant,
  startBilling,
} from "./support.ts";

const DAY = 86_400_000;
const HOUR = 3_600_000;
const VOIDED = "trellis.billing.invoice.voided";
const UPDATED = "trellis.billing.subscription.updated";

const rejectsWith = (p: Promise<unknown>, code: Code, message?: string) =>
  assert.rejects(p, (e: unknown) => ConnectError.from(e).code === code, message);

describe("VoidInvoice", () => {
  let h: Harness;
  let nc: NatsConnection;
  before(async () => {
    h = await startBilling({ BILLING_TAX_RATE_BPS: "1000", BILLING_DUNNING_RETRY_DAYS: "1,3,5" });
    nc = await connect({ servers: h.nats.url });
  });
  after(async () => {
    await nc?.close();
    await h?.close();
  });

  const base = futureYearStart(3);

  /**
   * A tenant subscribed at base to a 10.00 monthly plan, its first invoice charged to token: by
   * default declined, so the subscription is PAST_DUE and invoice 1 OPEN.
   */
  async function subscribed(token = "pm_card_declined") {
    const tenant = newTenant();
    const c = await h.user(tenant);
    await c.advanceClock({ advanceTo: at(base) });
    const plan = await createPlan(c, { monthly: 1000n });
    await c.attachPaymentMethod({ token, idempotencyKey: key() });
    const sub = (
      await c.createSubscription({ planId: plan.planId, interval: PlanInterval.MONTH, idempotencyKey: key() })
    ).subscription;
    const invoice = (await c.listInvoices({})).invoices[0];
    assert.ok(sub && invoice);
    return { tenant, c, plan, sub, invoice };
  }

  const invoiceOf = async (c: BillingClient, invoiceId: string) =>
    (await c.getInvoice({ invoiceId })).invoice;

  const chargesOf = async (invoiceId: string) =>
    (
      await h.store.sql<
        { n: number }[]
      >`select count(*)::int as n from charges where invoice_id = ${invoiceId}`
    )[0]?.n;

  /** Rows the outbox holds for subject whose payload names id (a protobuf string field holds its UTF-8 bytes). */
  const outboxRows = async (subject: string, id: string) =>
    (
      await h.store.sql<{ n: number }[]>`select count(*)::int as n from outbox
        where subject = ${subject} and position(convert_to(${id}, 'UTF8') in payload) > 0`
    )[0]?.n;

  /** Every event on the BILLING stream with subject, once the relay has sent all the outbox holds. */
  async function published<D extends DescMessage>(subject: string, schema: D): Promise<MessageShape<D>[]> {
    await eventually(
      async () =>
        (await h.store.sql<{ n: number }[]>`select count(*)::int as n from outbox where sent_at is null`)[0]
          ?.n === 0,
      { timeoutMs: 15_000, what: "the relay to send the outbox" },
    );
    const jsm = await nc.jetstreamManager();
    const name = uniqueName("void_test");
    await jsm.consumers.add("BILLING", {
      durable_name: name,
      ack_policy: AckPolicy.None,
      filter_subject: subject,
    });
    const consumer = await nc.jetstream().consumers.get("BILLING", name);
    const pending = (await consumer.info()).num_pending;
    const events: MessageShape<D>[] = [];
    if (pending > 0) {
      for await (const m of await consumer.fetch({ max_messages: pending, expires: 5_000 })) {
        events.push(fromBinary(schema, m.data));
      }
    }
    await jsm.consumers.delete("BILLING", name);
    assert.equal(events.length, pending, `read all ${subject} events`);
    return events;
  }

  test("an open invoice after a declined payment: VOID, same number, event, ACTIVE again, no more dunning", async () => {
    const { tenant, c, plan, sub, invoice } = await subscribed();
    assert.equal(sub.status, SubscriptionStatus.PAST_DUE);
    assert.equal(invoice.status, InvoiceStatus.OPEN);
    assert.equal(invoice.number, 1n);
    assert.equal(invoice.attemptCount, 1);
    assert.equal(timestampMs(invoice.nextPaymentAttemptAt ?? at(0)), base + DAY);

    const answer = await c.voidInvoice({
      invoiceId: invoice.invoiceId,
      idempotencyKey: key(),
      reason: "billed in error",
    });
    const voided = answer.invoice;
    assert.equal(voided?.invoiceId, invoice.invoiceId);
    assert.equal(voided?.status, InvoiceStatus.VOID);
    assert.equal(voided?.number, 1n);
    assert.equal(timestampMs(voided?.voidedAt ?? at(0)), base, "voided at the tenant's billing time");
    assert.equal(voided?.nextPaymentAttemptAt, undefined);
    assert.equal(voided?.total?.amountMinor, 1100n);
    assert.equal(voided?.lines.length, 1);

    // Read back: the contract and the row agree.
    const read = await invoiceOf(c, invoice.invoiceId);
    assert.equal(read?.status, InvoiceStatus.VOID);
    assert.equal(read?.number, 1n);
    assert.equal(timestampMs(read?.voidedAt ?? at(0)), base);
    const [row] = await h.store.sql<
      { status: string; number: bigint; voided_at: Date; next_payment_attempt_at: Date | null }[]
    >`select status, number, voided_at, next_payment_attempt_at from invoices where id = ${invoice.invoiceId}`;
    assert.deepEqual(row, {
      status: "void",
      number: 1n,
      voided_at: new Date(base),
      next_payment_attempt_at: null,
    });

    const current = (await c.getSubscription({})).subscription;
    assert.equal(current?.status, SubscriptionStatus.ACTIVE);

    const events = (await published(VOIDED, InvoiceVoidedSchema)).filter(
      (e) => e.invoiceId === invoice.invoiceId,
    );
    assert.equal(events.length, 1);
    const event = events[0];
    assert.equal(event?.tenantId, tenant);
    assert.equal(event?.number, 1n);
    assert.equal(event?.subscriptionId, sub.subscriptionId);
    assert.equal(event?.planId, plan.planId);
    assert.deepEqual([event?.total?.amountMinor, event?.total?.currency], [1100n, "USD"]);
    assert.equal(event?.reason, "billed in error");
    assert.equal(timestampMs(event?.occurredAt ?? at(0)), base);
    assert.ok(event?.eventId);
    const updates = (await published(UPDATED, SubscriptionUpdatedSchema)).filter(
      (e) => e.subscriptionId === sub.subscriptionId,
    );
    assert.deepEqual(
      updates.map((e) => [e.previousStatus, e.status]),
      [[SubscriptionStatus.PAST_DUE, SubscriptionStatus.ACTIVE]],
    );

    // Past every dunning day (1, 3 and 5 after finalization): nothing tries to collect it.
    const step = await c.advanceClock({ advanceTo: at(base + 6 * DAY) });
    assert.equal(step.paymentAttempts, 0);
    assert.equal(await chargesOf(invoice.invoiceId), 1);
    const later = await invoiceOf(c, invoice.invoiceId);
    assert.equal(later?.status, InvoiceStatus.VOID);
    assert.equal(later?.attemptCount, 1);
    assert.equal((await c.getSubscription({})).subscription?.status, SubscriptionStatus.ACTIVE);

    // The next invoice takes the next number: the voided one kept 1.
    await c.advanceClock({ advanceTo: at(timestampMs(sub.currentPeriodEnd ?? at(0)) + HOUR) });
    assert.deepEqual(
      (await c.listInvoices({})).invoices.map((i) => [i.number, i.status]),
      [
        [2n, InvoiceStatus.OPEN],
        [1n, InvoiceStatus.VOID],
      ],
    );
  });

  test("an uncollectible invoice can be voided; the canceled subscription stays canceled", async () => {
    const { c, invoice } = await subscribed();
    await c.advanceClock({ advanceTo: at(base + 6 * DAY) });
    assert.equal((await invoiceOf(c, invoice.invoiceId))?.status, InvoiceStatus.UNCOLLECTIBLE);
    assert.equal((await c.getSubscription({})).subscription?.status, SubscriptionStatus.CANCELED);
    const voided = (await c.voidInvoice({ invoiceId: invoice.invoiceId, idempotencyKey: key() })).invoice;
    assert.equal(voided?.status, InvoiceStatus.VOID);
    assert.equal(voided?.number, 1n);
    assert.equal((await c.getSubscription({})).subscription?.status, SubscriptionStatus.CANCELED);
  });

  test("a paid or draft invoice is failed_precondition and stays as it was", async () => {
    const { c } = await subscribed("pm_card_visa");
    const paid = (await c.listInvoices({})).invoices[0];
    assert.equal(paid?.status, InvoiceStatus.PAID);
    // A plan change puts proration lines on a draft for the period.
    const other = await createPlan(c, { name: "Max", monthly: 3000n });
    const sub = (await c.getSubscription({})).subscription;
    await c.advanceClock({ advanceTo: at(base + 10 * DAY) });
    await c.changePlan({
      subscriptionId: sub?.subscriptionId ?? "",
      planId: other.planId,
      interval: PlanInterval.MONTH,
      idempotencyKey: key(),
    });
    const draft = (await c.listInvoices({ status: InvoiceStatus.DRAFT })).invoices[0];
    assert.equal(draft?.status, InvoiceStatus.DRAFT);

    for (const invoice of [paid, draft]) {
      const id = invoice?.invoiceId ?? "";
      await rejectsWith(c.voidInvoice({ invoiceId: id, idempotencyKey: key() }), Code.FailedPrecondition);
      const after = await invoiceOf(c, id);
      assert.equal(after?.status, invoice?.status);
      assert.equal(after?.voidedAt, undefined);
      assert.equal(await outboxRows(VOIDED, id), 0);
    }
    assert.equal((await c.getSubscription({})).subscription?.status, SubscriptionStatus.ACTIVE);
  });

  test("voiding twice with different keys: the second is failed_precondition", async () => {
    const { c, invoice } = await subscribed();
    const first = await c.voidInvoice({ invoiceId: invoice.invoiceId, idempotencyKey: key() });
    assert.equal(first.invoice?.status, InvoiceStatus.VOID);
    await rejectsWith(
      c.voidInvoice({ invoiceId: invoice.invoiceId, idempotencyKey: key() }),
      Code.FailedPrecondition,
    );
    assert.equal(await outboxRows(VOIDED, invoice.invoiceId), 1);
  });

  test("the same idempotency key repeated answers the first response and voids once", async () => {
    const { c, invoice } = await subscribed();
    const request = { invoiceId: invoice.invoiceId, idempotencyKey: key(), reason: "duplicate" };
    const first = await c.voidInvoice(request);
    // The billing clock moves on, but a replay answers the stored response.
    await c.advanceClock({ advanceTo: at(base + HOUR) });
    const second = await c.voidInvoice(request);
    assert.deepEqual(second, first);
    assert.equal(timestampMs(second.invoice?.voidedAt ?? at(0)), base);
    // The same key with another request is refused.
    await rejectsWith(c.voidInvoice({ ...request, reason: "other" }), Code.FailedPrecondition);

    assert.equal(await outboxRows(VOIDED, invoice.invoiceId), 1);
    const events = (await published(VOIDED, InvoiceVoidedSchema)).filter(
      (e) => e.invoiceId === invoice.invoiceId,
    );
    assert.equal(events.length, 1);
  });

  test("another tenant's invoice and an unknown id are not_found", async () => {
    const { c, invoice } = await subscribed();
    const stranger = await h.user(newTenant());
    await rejectsWith(
      stranger.voidInvoice({ invoiceId: invoice.invoiceId, idempotencyKey: key() }),
      Code.NotFound,
    );
    await rejectsWith(c.voidInvoice({ invoiceId: "in_unknown", idempotencyKey: key() }), Code.NotFound);
    assert.equal((await invoiceOf(c, invoice.invoiceId))?.status, InvoiceStatus.OPEN);
    assert.equal((await c.getSubscription({})).subscription?.status, SubscriptionStatus.PAST_DUE);
    assert.equal(await outboxRows(VOIDED, invoice.invoiceId), 0);
  });

  test("bad input is invalid_argument and writes nothing", async () => {
    const { c, invoice } = await subscribed();
    const cases: Array<[string, Parameters<BillingClient["voidInvoice"]>[0]]> = [
      ["empty invoice_id", { invoiceId: "", idempotencyKey: key() }],
      ["invoice_id too long", { invoiceId: "x".repeat(65), idempotencyKey: key() }],
      ["missing idempotency key", { invoiceId: invoice.invoiceId }],
      ["reason too long", { invoiceId: invoice.invoiceId, idempotencyKey: key(), reason: "r".repeat(501) }],
    ];
    const written = async () =>
      (
        await h.store.sql<{ n: string }[]>`select concat_ws(',', (select count(*) from idempotency_keys),
          (select count(*) from outbox)) as n`
      )[0]?.n;
    for (const [name, request] of cases) {
      const before = await written();
      await rejectsWith(c.voidInvoice(request), Code.InvalidArgument, name);
      assert.equal(await written(), before, name);
    }
    assert.equal((await invoiceOf(c, invoice.invoiceId))?.status, InvoiceStatus.OPEN);
  });

  test("a caller without billing.invoices.manage is permission_denied", async () => {
    const { tenant, c, invoice } = await subscribed();
    const reader = await h.user(tenant, ["billing.invoices.read", "billing.subscriptions.manage"]);
    await rejectsWith(
      reader.voidInvoice({ invoiceId: invoice.invoiceId, idempotencyKey: key() }),
      Code.PermissionDenied,
    );
    assert.equal((await invoiceOf(c, invoice.invoiceId))?.status, InvoiceStatus.OPEN);
    assert.equal(await outboxRows(VOIDED, invoice.invoiceId), 0);
  });
});
