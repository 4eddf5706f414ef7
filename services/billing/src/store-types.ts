import type postgres from "postgres";
import type { Interval } from "./money.ts";

/** Anything queries run on: the pool or a transaction. */
export type Q = postgres.ISql<{ bigint: bigint }>;
/** A transaction of the billing database. */
export type Tx = postgres.TransactionSql<{ bigint: bigint }>;

/** A plan with its prices and metered components. */
export interface PlanRow {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly currency: string;
  readonly trialDays: number;
  readonly maxOrderValueMinor: bigint | null;
  readonly createdAt: Date;
  readonly prices: ReadonlyArray<{ readonly interval: Interval; readonly amountMinor: bigint }>;
  readonly components: ReadonlyArray<MeteredComponentRow>;
}

/** One metered component of a plan. */
export interface MeteredComponentRow {
  readonly metric: string;
  readonly unitPriceMinor: bigint;
  readonly includedQuantity: bigint;
}

/** Stored subscription statuses. */
export type SubscriptionStatusName = "trialing" | "active" | "past_due" | "canceled";

/** A subscription row. */
export interface SubscriptionRow {
  readonly id: string;
  readonly tenant_id: string;
  readonly plan_id: string;
  readonly interval: Interval;
  readonly status: SubscriptionStatusName;
  readonly payment_method_id: string | null;
  readonly trial_ends_at: Date | null;
  readonly billing_anchor: Date;
  readonly current_period_start: Date;
  readonly current_period_end: Date;
  readonly cancel_at_period_end: boolean;
  readonly canceled_at: Date | null;
  readonly cancellation_reason: "requested" | "payment_failed" | null;
  readonly created_at: Date;
}

/** A payment method row. */
export interface PaymentMethodRow {
  readonly id: string;
  readonly tenant_id: string;
  readonly provider_ref: string;
  readonly brand: string;
  readonly last4: string;
  readonly exp_month: number;
  readonly exp_year: number;
  readonly created_at: Date;
  /** Computed from the customer's default. */
  readonly is_default: boolean;
}

/** Stored charge statuses. */
export type ChargeStatusName = "succeeded" | "failed" | "partially_refunded" | "refunded";
/** Stored failure codes. */
export type FailureCodeName =
  | "card_declined"
  | "insufficient_funds"
  | "provider_timeout"
  | "no_payment_method";

/** A charge row. */
export interface ChargeRow {
  readonly id: string;
  readonly tenant_id: string;
  readonly amount_minor: bigint;
  readonly currency: string;
  readonly amount_refunded: bigint;
  readonly status: ChargeStatusName;
  readonly failure_code: FailureCodeName | null;
  readonly failure_message: string;
  readonly payment_method: string;
  readonly description: string;
  readonly metadata: Record<string, string>;
  readonly invoice_id: string | null;
  readonly provider_charge_id: string | null;
  readonly created_at: Date;
}

/** A refund row. */
export interface RefundRow {
  readonly id: string;
  readonly tenant_id: string;
  readonly charge_id: string;
  readonly amount_minor: bigint;
  readonly currency: string;
  readonly reason: string;
  readonly created_at: Date;
}

/** Stored invoice statuses. */
export type InvoiceStatusName = "draft" | "open" | "paid" | "void" | "uncollectible";

/** An invoice row (lines apart). */
export interface InvoiceRow {
  readonly id: string;
  readonly tenant_id: string;
  readonly subscription_id: string;
  readonly plan_id: string;
  readonly number: bigint | null;
  readonly status: InvoiceStatusName;
  readonly currency: string;
  readonly subtotal_minor: bigint;
  readonly tax_rate_bps: number;
  readonly tax_minor: bigint;
  readonly total_minor: bigint;
  readonly amount_paid_minor: bigint;
  readonly period_start: Date;
  readonly period_end: Date;
  readonly attempt_count: number;
  readonly next_payment_attempt_at: Date | null;
  readonly created_at: Date;
  readonly finalized_at: Date | null;
  readonly paid_at: Date | null;
  readonly voided_at: Date | null;
}

/** Stored line kinds. */
export type LineKindName = "subscription" | "proration" | "usage";

/** An invoice line row. */
export interface InvoiceLineRow {
  readonly id: string;
  readonly invoice_id: string;
  readonly kind: LineKindName;
  readonly description: string;
  readonly plan_id: string;
  readonly metric: string;
  readonly quantity: bigint;
  readonly unit_amount_minor: bigint;
  readonly amount_minor: bigint;
  readonly period_start: Date;
  readonly period_end: Date;
}

/** A usage record row. */
export interface UsageRow {
  readonly id: string;
  readonly tenant_id: string;
  readonly subscription_id: string;
  readonly plan_id: string;
  readonly metric: string;
  readonly quantity: bigint;
  readonly usage_at: Date;
  readonly created_at: Date;
}

/** The outcome of claiming an idempotency key. */
export type Claim =
  | { readonly kind: "claimed" }
  | { readonly kind: "replay"; readonly response: Uint8Array }
  | { readonly kind: "mismatch" }
  /** Another transaction holds the key and has not stored a response (it failed after claiming). */
  | { readonly kind: "in_progress" };
