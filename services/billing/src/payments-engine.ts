import {
  InvoiceFinalizedSchema,
  InvoicePaidSchema,
  InvoicePaymentFailedSchema,
  PaymentFailedSchema,
  PaymentSucceededSchema,
} from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { amountDue, failureCode, money, ts } from "./convert.ts";
import { emit } from "./events.ts";
import { newId } from "./ids.ts";
import { taxFor } from "./money.ts";
import { type PaymentProvider, ProviderTimeoutError } from "./provider.ts";
import type { ChargeRow, FailureCodeName, InvoiceRow, Queries, SubscriptionRow, Tx } from "./store.ts";

/** Billing rules that come from configuration. */
export interface BillingSettings {
  /** Tax rate applied at finalization, in basis points (1900 = 19%). */
  readonly taxRateBps: number;
  /** Dunning: retry a failed invoice payment this long after finalization, one entry per retry. */
  readonly dunningRetryMs: readonly number[];
  /** How long idempotency keys are kept (24 h). */
  readonly idempotencyTtlMs: number;
}

/** What an invoice step needs. */
export interface EngineDeps {
  readonly provider: PaymentProvider;
  readonly settings: BillingSettings;
}

/** The outcome of one payment attempt on an invoice. */
export interface AttemptOutcome {
  readonly paid: boolean;
  /** The attempt failed and no retry is left: the invoice is now uncollectible. */
  readonly exhausted: boolean;
  readonly invoice: InvoiceRow;
}

/** Finalizes a draft at `at` (number, totals, tax) and publishes InvoiceFinalized. */
export async function finalize(s: Queries, tx: Tx, deps: EngineDeps, draft: InvoiceRow, at: Date) {
  const rate = deps.settings.taxRateBps;
  const invoice = await s.finalizeInvoice(draft, at, rate, (subtotal) => taxFor(subtotal, rate));
  const m = (v: bigint) => money(v, invoice.currency);
  await emit(tx, InvoiceFinalizedSchema, {
    tenantId: invoice.tenant_id,
    invoiceId: invoice.id,
    number: invoice.number ?? 0n,
    subscriptionId: invoice.subscription_id,
    planId: invoice.plan_id,
    subtotal: m(invoice.subtotal_minor),
    taxRateBps: invoice.tax_rate_bps,
    tax: m(invoice.tax_minor),
    total: m(invoice.total_minor),
    amountDue: m(amountDue(invoice)),
    periodStart: ts(invoice.period_start),
    periodEnd: ts(invoice.period_end),
    occurredAt: ts(at),
  });
  return invoice;
}

/**
 * Tries to collect an open invoice at `at` from the subscription's payment method (else the
 * tenant's default), through the provider with providerKey, and records the charge, the invoice's
 * new state and their events. A failure schedules the next dunning retry, or, when none is left,
 * makes the invoice uncollectible. The caller updates the subscription.
 */
export async function attemptPayment(
  s: Queries,
  tx: Tx,
  deps: EngineDeps,
  args: { invoice: InvoiceRow; subscription: SubscriptionRow; at: Date; providerKey: string },
): Promise<AttemptOutcome> {
  const { invoice, subscription, at } = args;
  const attempt = invoice.attempt_count + 1;
  const due = amountDue(invoice);
  const base = { tenantId: invoice.tenant_id, invoiceId: invoice.id, occurredAt: ts(at) };
  const m = (v: bigint) => money(v, invoice.currency);
  const paidEvent = (chargeId: string) =>
    emit(tx, InvoicePaidSchema, {
      ...base,
      number: invoice.number ?? 0n,
      subscriptionId: invoice.subscription_id,
      planId: invoice.plan_id,
      amountPaid: m(invoice.total_minor > 0n ? invoice.total_minor : 0n),
      chargeId,
    });

  if (due === 0n) {
    const paid: InvoiceRow = { ...invoice, status: "paid", paid_at: at, next_payment_attempt_at: null };
    await s.updateInvoicePayment(paid);
    await paidEvent("");
    return { paid: true, exhausted: false, invoice: paid };
  }

  const customer = await s.lockCustomer(invoice.tenant_id);
  const pmId = subscription.payment_method_id ?? customer.defaultPaymentMethodId;
  const pm = pmId ? await s.getPaymentMethod(invoice.tenant_id, pmId) : undefined;
  let failure: FailureCodeName | undefined;
  let charge: ChargeRow | undefined;
  if (!pm) {
    failure = "no_payment_method";
  } else {
    const row = {
      id: newId("ch"),
      tenant_id: invoice.tenant_id,
      amount_minor: due,
      currency: invoice.currency,
      amount_refunded: 0n,
      payment_method: pm.id,
      description: `Invoice ${invoice.number ?? ""}`.trim(),
      metadata: { invoice_id: invoice.id },
      invoice_id: invoice.id,
      created_at: at,
    };
    try {
      const outcome = await deps.provider.charge({
        idempotencyKey: args.providerKey,
        tenantId: invoice.tenant_id,
        amountMinor: due,
        currency: invoice.currency,
        paymentMethodRef: pm.provider_ref,
        description: row.description,
        metadata: row.metadata,
      });
      charge =
        outcome.status === "succeeded"
          ? {
              ...row,
              status: "succeeded",
              failure_code: null,
              failure_message: "",
              provider_charge_id: outcome.providerChargeId,
            }
          : {
              ...row,
              status: "failed",
              failure_code: outcome.code,
              failure_message: outcome.message,
              provider_charge_id: outcome.providerChargeId,
            };
    } catch (error) {
      if (!(error instanceof ProviderTimeoutError)) throw error;
      charge = {
        ...row,
        status: "failed",
        failure_code: "provider_timeout",
        failure_message: "provider timed out",
        provider_charge_id: null,
      };
    }
    await s.insertCharge(charge);
    failure = charge.failure_code ?? undefined;
    const event = {
      tenantId: charge.tenant_id,
      chargeId: charge.id,
      amount: m(charge.amount_minor),
      paymentMethod: charge.payment_method,
      invoiceId: invoice.id,
      metadata: charge.metadata,
      occurredAt: ts(at),
    };
    if (charge.status === "succeeded") await emit(tx, PaymentSucceededSchema, event);
    else await emit(tx, PaymentFailedSchema, { ...event, failureCode: failureCode(charge.failure_code) });
  }

  if (!failure && charge) {
    const paid: InvoiceRow = {
      ...invoice,
      status: "paid",
      amount_paid_minor: invoice.amount_paid_minor + due,
      paid_at: at,
      attempt_count: attempt,
      next_payment_attempt_at: null,
    };
    await s.updateInvoicePayment(paid);
    await paidEvent(charge.id);
    return { paid: true, exhausted: false, invoice: paid };
  }

  const retryIn = deps.settings.dunningRetryMs[attempt - 1];
  const finalizedAt = invoice.finalized_at ?? at;
  const next = retryIn === undefined ? null : new Date(finalizedAt.getTime() + retryIn);
  const failed: InvoiceRow = {
    ...invoice,
    status: next ? "open" : "uncollectible",
    attempt_count: attempt,
    next_payment_attempt_at: next,
  };
  await s.updateInvoicePayment(failed);
  await emit(tx, InvoicePaymentFailedSchema, {
    ...base,
    number: invoice.number ?? 0n,
    subscriptionId: invoice.subscription_id,
    planId: invoice.plan_id,
    amountDue: m(due),
    chargeId: charge?.id ?? "",
    failureCode: failureCode(failure ?? "no_payment_method"),
    attemptCount: attempt,
    nextPaymentAttemptAt: ts(next),
  });
  return { paid: false, exhausted: next === null, invoice: failed };
}
