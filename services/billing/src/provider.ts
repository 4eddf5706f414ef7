/**
 * What billing needs from a payment provider. Every call that moves money carries an idempotency
 * key: the provider must answer a repeated key with the first outcome and never move money twice.
 */
export interface PaymentProvider {
  /** Provider name, for logs ("sandbox", "stripe"). */
  readonly name: string;
  /** Turns a client-side token into a chargeable reference with card details; throws UnknownPaymentMethodError. */
  attach(input: AttachInput): Promise<AttachedCard>;
  /** Whether text is a token the provider can charge once without attaching (a one-off Charge). */
  isToken(text: string): boolean;
  /**
   * Charges a payment method. A decline resolves with status "failed"; a provider that does not
   * answer in time throws ProviderTimeoutError (nothing settled: retry with the same key).
   */
  charge(input: ChargeInput): Promise<ChargeOutcome>;
  /** Refunds part or all of a charge the provider took; the key makes a retry a no-op. */
  refund(input: RefundInput): Promise<RefundOutcome>;
}

/** Input of {@link PaymentProvider.attach}. */
export interface AttachInput {
  readonly tenantId: string;
  readonly token: string;
  readonly idempotencyKey: string;
}

/** A payment method the provider holds for a tenant. */
export interface AttachedCard {
  /** What to pass as paymentMethodRef when charging it. */
  readonly ref: string;
  readonly brand: string;
  readonly last4: string;
  readonly expMonth: number;
  readonly expYear: number;
}

/** Input of {@link PaymentProvider.charge}. */
export interface ChargeInput {
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly amountMinor: bigint;
  readonly currency: string;
  /** An attached card's ref or a one-off token. */
  readonly paymentMethodRef: string;
  readonly description: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Why a provider declined. */
export type DeclineCode = "card_declined" | "insufficient_funds";

/** The provider's answer to a charge. */
export type ChargeOutcome =
  | { readonly status: "succeeded"; readonly providerChargeId: string }
  | {
      readonly status: "failed";
      readonly providerChargeId: string;
      readonly code: DeclineCode;
      readonly message: string;
    };

/** Input of {@link PaymentProvider.refund}. */
export interface RefundInput {
  readonly idempotencyKey: string;
  readonly providerChargeId: string;
  readonly amountMinor: bigint;
  readonly currency: string;
}

/** The provider's answer to a refund. */
export interface RefundOutcome {
  readonly providerRefundId: string;
}

/** The provider did not answer in time; nothing was settled. */
export class ProviderTimeoutError extends Error {
  override name = "ProviderTimeoutError";
}

/** The token is not one the provider knows. */
export class UnknownPaymentMethodError extends Error {
  override name = "UnknownPaymentMethodError";
}

/** The provider saw an idempotency key again with different parameters. */
export class IdempotencyMismatchError extends Error {
  override name = "IdempotencyMismatchError";
}
