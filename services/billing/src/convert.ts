import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  CancellationReason,
  type Charge,
  ChargeSchema,
  ChargeStatus,
  type Invoice,
  type InvoiceLine,
  InvoiceLineKind,
  InvoiceLineSchema,
  InvoiceSchema,
  InvoiceStatus,
  PaymentFailureCode,
  type PaymentMethod,
  PaymentMethodSchema,
  type Plan,
  PlanInterval,
  PlanSchema,
  type Subscription,
  SubscriptionSchema,
  SubscriptionStatus,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { type Money, MoneySchema } from "@trellis/gen/trellis/common/v1/money_pb.js";
import type { Interval } from "./money.ts";
import type {
  ChargeRow,
  ChargeStatusName,
  FailureCodeName,
  InvoiceLineRow,
  InvoiceRow,
  InvoiceStatusName,
  LineKindName,
  PaymentMethodRow,
  PlanRow,
  SubscriptionRow,
  SubscriptionStatusName,
} from "./store.ts";

/** Money in minor units and a currency. */
export function money(amountMinor: bigint, currency: string): Money {
  return create(MoneySchema, { amountMinor, currency });
}

/** A Timestamp, or undefined for null. */
export function ts(date: Date | null | undefined) {
  return date ? timestampFromDate(date) : undefined;
}

/** The contract's interval for a stored one and back. */
export const intervals = {
  toProto: (i: Interval): PlanInterval => (i === "month" ? PlanInterval.MONTH : PlanInterval.YEAR),
  fromProto: (i: PlanInterval): Interval => (i === PlanInterval.YEAR ? "year" : "month"),
};

const subscriptionStatuses: Record<SubscriptionStatusName, SubscriptionStatus> = {
  trialing: SubscriptionStatus.TRIALING,
  active: SubscriptionStatus.ACTIVE,
  past_due: SubscriptionStatus.PAST_DUE,
  canceled: SubscriptionStatus.CANCELED,
};

/** The contract's subscription status for a stored one. */
export function subscriptionStatus(status: SubscriptionStatusName): SubscriptionStatus {
  return subscriptionStatuses[status];
}

const invoiceStatuses: Record<InvoiceStatusName, InvoiceStatus> = {
  draft: InvoiceStatus.DRAFT,
  open: InvoiceStatus.OPEN,
  paid: InvoiceStatus.PAID,
  void: InvoiceStatus.VOID,
  uncollectible: InvoiceStatus.UNCOLLECTIBLE,
};

/** The stored invoice status for the contract's, or null for unspecified. */
export function invoiceStatusName(status: InvoiceStatus): InvoiceStatusName | null {
  const found = Object.entries(invoiceStatuses).find(([, v]) => v === status);
  return found ? (found[0] as InvoiceStatusName) : null;
}

const failureCodes: Record<FailureCodeName, PaymentFailureCode> = {
  card_declined: PaymentFailureCode.CARD_DECLINED,
  insufficient_funds: PaymentFailureCode.INSUFFICIENT_FUNDS,
  provider_timeout: PaymentFailureCode.PROVIDER_TIMEOUT,
  no_payment_method: PaymentFailureCode.NO_PAYMENT_METHOD,
};

/** The contract's failure code for a stored one. */
export function failureCode(code: FailureCodeName | null): PaymentFailureCode {
  return code ? failureCodes[code] : PaymentFailureCode.UNSPECIFIED;
}

const chargeStatuses: Record<ChargeStatusName, ChargeStatus> = {
  succeeded: ChargeStatus.SUCCEEDED,
  failed: ChargeStatus.FAILED,
  partially_refunded: ChargeStatus.PARTIALLY_REFUNDED,
  refunded: ChargeStatus.REFUNDED,
};

/** The contract's charge status for a stored one. */
export function chargeStatus(status: ChargeStatusName): ChargeStatus {
  return chargeStatuses[status];
}

const lineKinds: Record<LineKindName, InvoiceLineKind> = {
  subscription: InvoiceLineKind.SUBSCRIPTION,
  proration: InvoiceLineKind.PRORATION,
  usage: InvoiceLineKind.USAGE,
};

/** A plan message. */
export function toPlan(p: PlanRow): Plan {
  return create(PlanSchema, {
    planId: p.id,
    name: p.name,
    description: p.description,
    currency: p.currency,
    prices: p.prices.map((x) => ({
      interval: intervals.toProto(x.interval),
      amount: money(x.amountMinor, p.currency),
    })),
    trialDays: p.trialDays,
    meteredComponents: p.components.map((c) => ({
      metric: c.metric,
      unitPrice: money(c.unitPriceMinor, p.currency),
      includedQuantity: c.includedQuantity,
    })),
    maxOrderValue: p.maxOrderValueMinor === null ? undefined : money(p.maxOrderValueMinor, p.currency),
    createdAt: ts(p.createdAt),
  });
}

/** A subscription message. */
export function toSubscription(s: SubscriptionRow): Subscription {
  return create(SubscriptionSchema, {
    subscriptionId: s.id,
    tenantId: s.tenant_id,
    planId: s.plan_id,
    interval: intervals.toProto(s.interval),
    status: subscriptionStatus(s.status),
    paymentMethodId: s.payment_method_id ?? "",
    trialEndsAt: ts(s.trial_ends_at),
    currentPeriodStart: ts(s.current_period_start),
    currentPeriodEnd: ts(s.current_period_end),
    cancelAtPeriodEnd: s.cancel_at_period_end,
    canceledAt: ts(s.canceled_at),
    cancellationReason:
      s.cancellation_reason === "requested"
        ? CancellationReason.REQUESTED
        : s.cancellation_reason === "payment_failed"
          ? CancellationReason.PAYMENT_FAILED
          : CancellationReason.UNSPECIFIED,
    createdAt: ts(s.created_at),
  });
}

/** A payment method message. */
export function toPaymentMethod(pm: PaymentMethodRow): PaymentMethod {
  return create(PaymentMethodSchema, {
    paymentMethodId: pm.id,
    brand: pm.brand,
    last4: pm.last4,
    expMonth: pm.exp_month,
    expYear: pm.exp_year,
    isDefault: pm.is_default,
    createdAt: ts(pm.created_at),
  });
}

/** A charge message. */
export function toCharge(c: ChargeRow): Charge {
  return create(ChargeSchema, {
    chargeId: c.id,
    tenantId: c.tenant_id,
    amount: money(c.amount_minor, c.currency),
    amountRefunded: money(c.amount_refunded, c.currency),
    status: chargeStatus(c.status),
    failureCode: failureCode(c.failure_code),
    failureMessage: c.failure_message,
    paymentMethod: c.payment_method,
    description: c.description,
    metadata: { ...c.metadata },
    invoiceId: c.invoice_id ?? "",
    createdAt: ts(c.created_at),
  });
}

/** An invoice line message. */
export function toInvoiceLine(l: InvoiceLineRow, currency: string): InvoiceLine {
  return create(InvoiceLineSchema, {
    lineId: l.id,
    kind: lineKinds[l.kind],
    description: l.description,
    planId: l.plan_id,
    metric: l.metric,
    quantity: l.quantity,
    unitAmount: money(l.unit_amount_minor, currency),
    amount: money(l.amount_minor, currency),
    periodStart: ts(l.period_start),
    periodEnd: ts(l.period_end),
  });
}

/** Amount still due: total minus paid, never below zero. */
export function amountDue(i: InvoiceRow): bigint {
  const due = i.total_minor - i.amount_paid_minor;
  return due > 0n ? due : 0n;
}

/** An invoice message with its lines. */
export function toInvoice(i: InvoiceRow, lines: readonly InvoiceLineRow[]): Invoice {
  // A draft shows the running sum of its lines; its tax is fixed at finalization.
  const subtotal =
    i.status === "draft" ? lines.reduce((sum, l) => sum + l.amount_minor, 0n) : i.subtotal_minor;
  return create(InvoiceSchema, {
    invoiceId: i.id,
    tenantId: i.tenant_id,
    number: i.number ?? 0n,
    subscriptionId: i.subscription_id,
    status: invoiceStatuses[i.status],
    currency: i.currency,
    lines: lines.map((l) => toInvoiceLine(l, i.currency)),
    subtotal: money(subtotal, i.currency),
    taxRateBps: i.tax_rate_bps,
    tax: money(i.tax_minor, i.currency),
    total: money(i.status === "draft" ? subtotal : i.total_minor, i.currency),
    amountPaid: money(i.amount_paid_minor, i.currency),
    amountDue: money(i.status === "draft" ? (subtotal > 0n ? subtotal : 0n) : amountDue(i), i.currency),
    periodStart: ts(i.period_start),
    periodEnd: ts(i.period_end),
    attemptCount: i.attempt_count,
    nextPaymentAttemptAt: ts(i.next_payment_attempt_at),
    createdAt: ts(i.created_at),
    finalizedAt: ts(i.finalized_at),
    paidAt: ts(i.paid_at),
    voidedAt: ts(i.voided_at),
  });
}
