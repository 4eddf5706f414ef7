import { CancellationReason, type SubscriptionStatus } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import {
  SubscriptionCanceledSchema,
  SubscriptionUpdatedSchema,
} from "@trellis/gen/trellis/billing/v1/events_pb.js";
import type { Money } from "@trellis/gen/trellis/common/v1/money_pb.js";
import { intervals, subscriptionStatus, ts } from "./convert.ts";
import { emit } from "./events.ts";
import { newId } from "./ids.ts";
import { attemptPayment, type EngineDeps, finalize } from "./payments-engine.ts";
import { formatDay, nextBoundary } from "./periods.ts";
import type { InvoiceRow, PlanRow, Queries, SubscriptionRow, Tx } from "./store.ts";

/** Counts of what ran, for AdvanceClock's answer. */
export interface StepCounts {
  invoicesFinalized: number;
  paymentAttempts: number;
  subscriptionsRenewed: number;
  subscriptionsCanceled: number;
}

/** Fresh zero counts. */
export function zeroCounts(): StepCounts {
  return { invoicesFinalized: 0, paymentAttempts: 0, subscriptionsRenewed: 0, subscriptionsCanceled: 0 };
}

/** "Pro (monthly)". */
export function planLabel(plan: PlanRow, interval: "month" | "year"): string {
  return `${plan.name} (${interval === "month" ? "monthly" : "yearly"})`;
}

/** The plan's price for an interval, or undefined when it has none. */
export function priceOf(plan: PlanRow, interval: "month" | "year"): bigint | undefined {
  return plan.prices.find((p) => p.interval === interval)?.amountMinor;
}

/** The subscription's draft invoice, created for its current period when it has none. */
export async function ensureDraft(
  s: Queries,
  sub: SubscriptionRow,
  plan: PlanRow,
  at: Date,
): Promise<InvoiceRow> {
  const existing = await s.draftInvoice(sub.id);
  if (existing) return existing;
  const draft: InvoiceRow = {
    id: newId("in"),
    tenant_id: sub.tenant_id,
    subscription_id: sub.id,
    plan_id: sub.plan_id,
    number: null,
    status: "draft",
    currency: plan.currency,
    subtotal_minor: 0n,
    tax_rate_bps: 0,
    tax_minor: 0n,
    total_minor: 0n,
    amount_paid_minor: 0n,
    period_start: sub.current_period_start,
    period_end: sub.current_period_end,
    attempt_count: 0,
    next_payment_attempt_at: null,
    created_at: at,
    finalized_at: null,
    paid_at: null,
    voided_at: null,
  };
  await s.insertInvoice(draft);
  return draft;
}

/** Adds a line to an invoice. */
export async function addLine(
  s: Queries,
  invoice: InvoiceRow,
  line: {
    kind: "subscription" | "proration" | "usage";
    description: string;
    planId: string;
    metric?: string;
    quantity: bigint;
    unitAmountMinor: bigint;
    periodStart: Date;
    periodEnd: Date;
  },
): Promise<void> {
  await s.insertLine({
    id: newId("il"),
    invoice_id: invoice.id,
    kind: line.kind,
    description: line.description,
    plan_id: line.planId,
    metric: line.metric ?? "",
    quantity: line.quantity,
    unit_amount_minor: line.unitAmountMinor,
    amount_minor: line.quantity * line.unitAmountMinor,
    period_start: line.periodStart,
    period_end: line.periodEnd,
  });
}

/** Adds usage beyond each component's included quantity in [start, end), priced by the plan it was recorded under. */
export async function addUsageLines(
  s: Queries,
  invoice: InvoiceRow,
  sub: SubscriptionRow,
  start: Date,
  end: Date,
) {
  for (const total of await s.usageTotals(sub.id, start, end)) {
    const component = await s.meteredComponent(total.plan_id, total.metric);
    if (!component) continue;
    const billable = total.quantity - component.includedQuantity;
    if (billable <= 0n) continue;
    await addLine(s, invoice, {
      kind: "usage",
      description: `${total.metric}: ${total.quantity} used, ${component.includedQuantity} included, ${formatDay(start)} – ${formatDay(end)}`,
      planId: total.plan_id,
      metric: total.metric,
      quantity: billable,
      unitAmountMinor: component.unitPriceMinor,
      periodStart: start,
      periodEnd: end,
    });
  }
}

/** Publishes SubscriptionUpdated for a change from `before` to `after`. */
export async function emitUpdated(
  tx: Tx,
  before: SubscriptionRow,
  after: SubscriptionRow,
  at: Date,
  proration?: Money,
) {
  await emit(tx, SubscriptionUpdatedSchema, {
    tenantId: after.tenant_id,
    subscriptionId: after.id,
    planId: after.plan_id,
    previousPlanId: before.plan_id,
    interval: intervals.toProto(after.interval),
    status: subscriptionStatus(after.status),
    previousStatus: subscriptionStatus(before.status),
    cancelAtPeriodEnd: after.cancel_at_period_end,
    currentPeriodStart: ts(after.current_period_start),
    currentPeriodEnd: ts(after.current_period_end),
    proration,
    occurredAt: ts(at),
  });
}

/** Ends a subscription at `at` for reason, deleting its draft, and publishes SubscriptionCanceled. */
export async function cancelSubscription(
  s: Queries,
  tx: Tx,
  sub: SubscriptionRow,
  at: Date,
  reason: "requested" | "payment_failed",
): Promise<SubscriptionRow> {
  const canceled: SubscriptionRow = {
    ...sub,
    status: "canceled",
    canceled_at: at,
    cancellation_reason: reason,
  };
  await s.updateSubscription(canceled);
  const draft = await s.draftInvoice(sub.id);
  if (draft) await s.deleteDraft(draft.id);
  await emit(tx, SubscriptionCanceledSchema, {
    tenantId: sub.tenant_id,
    subscriptionId: sub.id,
    planId: sub.plan_id,
    previousStatus: subscriptionStatus(sub.status) as SubscriptionStatus,
    reason: reason === "requested" ? CancellationReason.REQUESTED : CancellationReason.PAYMENT_FAILED,
    occurredAt: ts(at),
  });
  return canceled;
}

/**
 * Closes the draft of a subscription ending now: usage up to `at` (unless trialing) joins its
 * lines; with any line it is finalized and collected once (dunning may follow), else deleted.
 */
export async function closeFinalInvoice(
  s: Queries,
  tx: Tx,
  deps: EngineDeps,
  sub: SubscriptionRow,
  plan: PlanRow,
  at: Date,
  counts: StepCounts,
) {
  if (sub.status !== "trialing") {
    const draft = await ensureDraft(s, sub, plan, at);
    await addUsageLines(s, draft, sub, sub.current_period_start, at);
  }
  const draft = await s.draftInvoice(sub.id);
  if (!draft) return;
  if ((await s.linesOf([draft.id])).length === 0) {
    await s.deleteDraft(draft.id);
    return;
  }
  const invoice = await finalize(s, tx, deps, { ...draft, plan_id: sub.plan_id }, at);
  counts.invoicesFinalized++;
  counts.paymentAttempts++;
  await attemptPayment(s, tx, deps, {
    invoice,
    subscription: sub,
    at,
    providerKey: `${sub.id}:final:attempt:1`,
  });
}

/**
 * Closes a subscription's period at its end: a scheduled cancellation ends it; otherwise the
 * draft gets the closing period's usage (none for a trial) and the next period's fee, is
 * finalized and collected, and the subscription moves into the next period (ACTIVE when paid,
 * PAST_DUE when not).
 */
export async function closePeriod(
  s: Queries,
  tx: Tx,
  deps: EngineDeps,
  subIn: SubscriptionRow,
  counts: StepCounts,
) {
  const at = subIn.current_period_end;
  const plan = await s.getPlan(subIn.plan_id);
  if (!plan) throw new Error(`plan ${subIn.plan_id} of ${subIn.id} is missing`);
  if (subIn.cancel_at_period_end) {
    await closeFinalInvoice(s, tx, deps, subIn, plan, at, counts);
    await cancelSubscription(s, tx, subIn, at, "requested");
    counts.subscriptionsCanceled++;
    return;
  }
  const draft = await ensureDraft(s, subIn, plan, at);
  if (subIn.status !== "trialing") await addUsageLines(s, draft, subIn, subIn.current_period_start, at);
  const nextEnd = nextBoundary(subIn.billing_anchor, subIn.interval, at);
  const price = priceOf(plan, subIn.interval);
  if (price === undefined) throw new Error(`plan ${plan.id} has no ${subIn.interval} price`);
  await addLine(s, draft, {
    kind: "subscription",
    description: `${planLabel(plan, subIn.interval)}, ${formatDay(at)} – ${formatDay(nextEnd)}`,
    planId: plan.id,
    quantity: 1n,
    unitAmountMinor: price,
    periodStart: at,
    periodEnd: nextEnd,
  });
  const invoice = await finalize(s, tx, deps, { ...draft, plan_id: subIn.plan_id }, at);
  counts.invoicesFinalized++;
  const moved: SubscriptionRow = { ...subIn, current_period_start: at, current_period_end: nextEnd };
  await carryCredit(s, moved, plan, invoice, at);
  counts.paymentAttempts++;
  const outcome = await attemptPayment(s, tx, deps, {
    invoice,
    subscription: moved,
    at,
    providerKey: `${subIn.id}:${at.toISOString()}:attempt:1`,
  });
  const others = await s.openInvoiceCount(subIn.id, invoice.id);
  const after: SubscriptionRow = { ...moved, status: outcome.paid && others === 0 ? "active" : "past_due" };
  await s.updateSubscription(after);
  counts.subscriptionsRenewed++;
  await emitUpdated(tx, subIn, after, at);
  if (outcome.exhausted) {
    await cancelSubscription(s, tx, after, at, "payment_failed");
    counts.subscriptionsCanceled++;
  }
}

/** A negative total (credits beyond charges) moves on to the next draft as a credit line. */
export async function carryCredit(
  s: Queries,
  sub: SubscriptionRow,
  plan: PlanRow,
  invoice: InvoiceRow,
  at: Date,
) {
  if (invoice.total_minor >= 0n) return;
  const next = await ensureDraft(s, sub, plan, at);
  await addLine(s, next, {
    kind: "proration",
    description: `Credit carried over from invoice ${invoice.number}`,
    planId: invoice.plan_id,
    quantity: 1n,
    unitAmountMinor: invoice.total_minor,
    periodStart: invoice.period_start,
    periodEnd: invoice.period_end,
  });
}

/**
 * A dunning retry of an open invoice at its scheduled time. Paid: a PAST_DUE subscription with no
 * other open invoice becomes ACTIVE. Out of retries: the invoice is uncollectible and a live
 * subscription is canceled (payment_failed).
 */
export async function retryInvoice(
  s: Queries,
  tx: Tx,
  deps: EngineDeps,
  invoiceId: string,
  tenantId: string,
  counts: StepCounts,
) {
  const invoice = await s.getInvoice(tenantId, invoiceId, true);
  if (invoice?.status !== "open" || !invoice.next_payment_attempt_at) return;
  const at = invoice.next_payment_attempt_at;
  const sub = await s.getSubscription(tenantId, invoice.subscription_id, true);
  if (!sub) throw new Error(`subscription of invoice ${invoice.id} is missing`);
  counts.paymentAttempts++;
  const outcome = await attemptPayment(s, tx, deps, {
    invoice,
    subscription: sub,
    at,
    providerKey: `${invoice.id}:attempt:${invoice.attempt_count + 1}`,
  });
  if (outcome.paid && sub.status === "past_due" && (await s.openInvoiceCount(sub.id, invoice.id)) === 0) {
    const after: SubscriptionRow = { ...sub, status: "active" };
    await s.updateSubscription(after);
    await emitUpdated(tx, sub, after, at);
  }
  if (outcome.exhausted && sub.status !== "canceled") {
    await cancelSubscription(s, tx, sub, at, "payment_failed");
    counts.subscriptionsCanceled++;
  }
}
