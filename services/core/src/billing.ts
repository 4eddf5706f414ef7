import { create } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import {
  BillingService,
  ChargeStatus,
  PaymentFailureCode,
  SubscriptionStatus,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { MoneySchema } from "@trellis/gen/trellis/common/v1/money_pb.js";
import { createServiceClient } from "@trellis/kit/client.js";
import type { Tracer } from "@trellis/kit/tracing.js";
import type { Amount, BillingFacts, SubscriptionState } from "./rules.js";

/** A one-off charge for an order. */
export interface ChargeInput {
  readonly tenantId: string;
  readonly amount: Amount;
  readonly idempotencyKey: string;
  readonly paymentMethod: string;
  readonly orderId: string;
}

/** Billing's definite answer to a charge (errors — unavailable, deadline … — are thrown as ConnectError). */
export type ChargeOutcome =
  | { readonly kind: "succeeded"; readonly chargeId: string }
  | { readonly kind: "refunded"; readonly chargeId: string }
  | { readonly kind: "failed"; readonly chargeId: string; readonly failureCode: string };

/** A full refund of a charge. */
export interface RefundInput {
  readonly tenantId: string;
  readonly chargeId: string;
  readonly idempotencyKey: string;
  readonly reason: string;
}

/** What core needs of billing: the saga's charge and refund, and the business rules' tenant status. */
export interface BillingPort {
  charge(input: ChargeInput, options: { timeoutMs: number }): Promise<ChargeOutcome>;
  refund(input: RefundInput, options: { timeoutMs: number }): Promise<void>;
  status(tenantId: string, options?: { timeoutMs?: number }): Promise<BillingFacts>;
  close(): void;
}

/** Options of createBillingClient. */
export interface BillingClientOptions {
  readonly baseUrl: string;
  /** mTLS as "core": core's certificate, key and the CA; billing must present the billing SPIFFE id. */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string };
  /**
   * Dev/tests without TLS only: the x-forwarded-client-cert header naming core, for a billing that
   * runs with TRUST_FORWARDED_IDENTITY=true. Never use it where the network is not trusted.
   */
  readonly forwardedIdentity?: boolean;
  readonly tracer?: Tracer;
}

/** Core's SPIFFE id. */
export const coreSpiffeId = "spiffe://trellis.local/ns/trellis/sa/core";
const billingSpiffeId = "spiffe://trellis.local/ns/trellis/sa/billing";

const subscriptionStates: Readonly<Record<SubscriptionStatus, SubscriptionState>> = {
  [SubscriptionStatus.UNSPECIFIED]: "none",
  [SubscriptionStatus.TRIALING]: "trialing",
  [SubscriptionStatus.ACTIVE]: "active",
  [SubscriptionStatus.PAST_DUE]: "past_due",
  [SubscriptionStatus.CANCELED]: "canceled",
};

/** The rules' name for billing's subscription status. */
export function billingSubscriptionState(status: SubscriptionStatus): SubscriptionState {
  return subscriptionStates[status] ?? "none";
}

const failureCodes: Readonly<Record<PaymentFailureCode, string>> = {
  [PaymentFailureCode.UNSPECIFIED]: "payment_failed",
  [PaymentFailureCode.CARD_DECLINED]: "card_declined",
  [PaymentFailureCode.INSUFFICIENT_FUNDS]: "insufficient_funds",
  [PaymentFailureCode.PROVIDER_TIMEOUT]: "provider_timeout",
  [PaymentFailureCode.NO_PAYMENT_METHOD]: "no_payment_method",
};

/** BillingPort over billing's gRPC API (kit client: deadlines, tracing; retries are the saga's job). */
export function createBillingClient(options: BillingClientOptions): BillingPort {
  const identity: Interceptor = (next) => (req) => {
    req.header.set("x-forwarded-client-cert", `URI=${coreSpiffeId}`);
    return next(req);
  };
  const { client, close } = createServiceClient(BillingService, {
    baseUrl: options.baseUrl,
    tls: options.tls && { ...options.tls, serverIdentity: billingSpiffeId },
    tracer: options.tracer,
    maxRetries: 0,
    interceptors: options.forwardedIdentity ? [identity] : [],
  });
  return {
    async charge(input, { timeoutMs }) {
      const { charge } = await client.charge(
        {
          tenantId: input.tenantId,
          amount: create(MoneySchema, input.amount),
          idempotencyKey: input.idempotencyKey,
          paymentMethod: input.paymentMethod,
          description: `Order ${input.orderId}`,
          metadata: { order_id: input.orderId },
        },
        { timeoutMs },
      );
      const chargeId = charge?.chargeId ?? "";
      switch (charge?.status) {
        // Partly refunded money is still kept: for core it is a charge to refund.
        case ChargeStatus.SUCCEEDED:
        case ChargeStatus.PARTIALLY_REFUNDED:
          return { kind: "succeeded", chargeId };
        case ChargeStatus.REFUNDED:
          return { kind: "refunded", chargeId };
        default:
          return {
            kind: "failed",
            chargeId,
            failureCode: failureCodes[charge?.failureCode ?? 0] ?? "payment_failed",
          };
      }
    },
    async refund(input, { timeoutMs }) {
      await client.refund(
        {
          tenantId: input.tenantId,
          chargeId: input.chargeId,
          idempotencyKey: input.idempotencyKey,
          reason: input.reason,
        },
        { timeoutMs },
      );
    },
    async status(tenantId, callOptions = {}) {
      const res = await client.getTenantBillingStatus({ tenantId }, { timeoutMs: callOptions.timeoutMs });
      const max = res.maxOrderValue;
      return {
        subscription: billingSubscriptionState(res.subscriptionStatus),
        planId: res.planId,
        ...(max ? { maxOrderValue: { amountMinor: max.amountMinor, currency: max.currency } } : {}),
      };
    },
    close,
  };
}
