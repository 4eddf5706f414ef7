import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type BillingService,
  ChargeRequestSchema,
  ChargeResponseSchema,
  GetTenantBillingStatusResponseSchema,
  RefundRequestSchema,
  RefundResponseSchema,
  SubscriptionStatus,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import {
  PaymentFailedSchema,
  PaymentRefundedSchema,
  PaymentSucceededSchema,
} from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { clockNow } from "./clock.ts";
import { chargeStatus, failureCode, money, subscriptionStatus, toCharge, ts } from "./convert.ts";
import { emit } from "./events.ts";
import { type HandlerDeps, idempotent, notFound, precondition } from "./handler-kit.ts";
import { isOwnId, newId } from "./ids.ts";
import { ProviderTimeoutError } from "./provider.ts";
import type { ChargeRow, Queries } from "./store.ts";

/** Charge, Refund and GetTenantBillingStatus: internal RPCs for core. */
export function createPaymentHandlers(
  deps: HandlerDeps,
): Pick<ServiceImpl<typeof BillingService>, "charge" | "refund" | "getTenantBillingStatus"> {
  const { store, provider } = deps;

  // The provider reference to charge and what the charge records as its payment method.
  const resolvePaymentMethod = async (s: Queries, tenantId: string, id: string) => {
    if (isOwnId(id, "pm")) {
      const pm = await s.getPaymentMethod(tenantId, id);
      if (!pm) throw notFound("payment method");
      return { ref: pm.provider_ref, label: pm.id };
    }
    if (provider.isToken(id)) return { ref: id, label: id };
    throw new ConnectError("unknown payment method", Code.InvalidArgument);
  };

  return {
    async charge(req) {
      const { tenantId } = req;
      const amount = req.amount;
      if (!amount) throw new ConnectError("amount is required", Code.InvalidArgument);
      return idempotent(
        deps,
        {
          tenantId,
          key: req.idempotencyKey,
          method: "Charge",
          requestSchema: ChargeRequestSchema,
          request: req,
          responseSchema: ChargeResponseSchema,
        },
        async (s, tx, { now, complete }) => {
          const pm = await resolvePaymentMethod(s, tenantId, req.paymentMethod);
          let outcome: Awaited<ReturnType<typeof provider.charge>>;
          try {
            outcome = await provider.charge({
              idempotencyKey: `charge:${tenantId}:${req.idempotencyKey}`,
              tenantId,
              amountMinor: amount.amountMinor,
              currency: amount.currency,
              paymentMethodRef: pm.ref,
              description: req.description,
              metadata: req.metadata,
            });
          } catch (error) {
            if (error instanceof ProviderTimeoutError) {
              // Rolled back with the key: nothing is recorded, and a retry with the key is safe.
              throw new ConnectError(
                "payment provider timed out; retry with the same idempotency key",
                Code.Unavailable,
              );
            }
            throw error;
          }
          const charge: ChargeRow = {
            id: newId("ch"),
            tenant_id: tenantId,
            amount_minor: amount.amountMinor,
            currency: amount.currency,
            amount_refunded: 0n,
            status: outcome.status,
            failure_code: outcome.status === "failed" ? outcome.code : null,
            failure_message: outcome.status === "failed" ? outcome.message : "",
            payment_method: pm.label,
            description: req.description,
            metadata: { ...req.metadata },
            invoice_id: null,
            provider_charge_id: outcome.providerChargeId,
            created_at: now,
          };
          const event = {
            tenantId,
            chargeId: charge.id,
            amount: money(charge.amount_minor, charge.currency),
            paymentMethod: charge.payment_method,
            invoiceId: "",
            metadata: charge.metadata,
            occurredAt: ts(now),
          };
          const response = create(ChargeResponseSchema, { charge: toCharge(charge) });
          // Issued together, so postgres.js pipelines them on the transaction's connection.
          await Promise.all([
            s.insertCharge(charge),
            charge.status === "succeeded"
              ? emit(tx, PaymentSucceededSchema, event)
              : emit(tx, PaymentFailedSchema, { ...event, failureCode: failureCode(charge.failure_code) }),
            complete(response),
          ]);
          return response;
        },
      );
    },

    async refund(req) {
      const { tenantId } = req;
      return idempotent(
        deps,
        {
          tenantId,
          key: req.idempotencyKey,
          method: "Refund",
          requestSchema: RefundRequestSchema,
          request: req,
          responseSchema: RefundResponseSchema,
        },
        async (s, tx, { now }) => {
          const charge = await s.getCharge(tenantId, req.chargeId, true);
          if (!charge) throw notFound("charge");
          if (charge.status === "failed" || charge.provider_charge_id === null) {
            throw precondition("only a succeeded charge can be refunded");
          }
          if (req.amount && req.amount.currency !== charge.currency) {
            throw new ConnectError("refund currency must be the charge's", Code.InvalidArgument);
          }
          const remaining = charge.amount_minor - charge.amount_refunded;
          const amountMinor = req.amount ? req.amount.amountMinor : remaining;
          if (remaining === 0n) throw precondition("the charge is already fully refunded");
          if (amountMinor > remaining) throw precondition("refund exceeds what remains of the charge");
          const refunded = await provider.refund({
            idempotencyKey: `refund:${tenantId}:${req.idempotencyKey}`,
            providerChargeId: charge.provider_charge_id,
            amountMinor,
            currency: charge.currency,
          });
          const total = charge.amount_refunded + amountMinor;
          const status = total === charge.amount_minor ? "refunded" : "partially_refunded";
          await s.updateChargeRefunded(charge.id, total, status);
          const refund = {
            id: newId("re"),
            tenant_id: tenantId,
            charge_id: charge.id,
            amount_minor: amountMinor,
            currency: charge.currency,
            reason: req.reason,
            created_at: now,
          };
          await s.insertRefund(refund, refunded.providerRefundId);
          await emit(tx, PaymentRefundedSchema, {
            tenantId,
            refundId: refund.id,
            chargeId: charge.id,
            amount: money(amountMinor, charge.currency),
            amountRefundedTotal: money(total, charge.currency),
            chargeStatus: chargeStatus(status),
            reason: req.reason,
            occurredAt: ts(now),
          });
          return create(RefundResponseSchema, {
            refund: {
              refundId: refund.id,
              chargeId: charge.id,
              amount: money(amountMinor, charge.currency),
              reason: req.reason,
              createdAt: ts(now),
            },
            charge: toCharge({ ...charge, amount_refunded: total, status }),
          });
        },
      );
    },

    async getTenantBillingStatus(req) {
      const sub = await store.currentSubscription(req.tenantId);
      const plan = sub ? await store.getPlan(sub.plan_id) : undefined;
      return create(GetTenantBillingStatusResponseSchema, {
        tenantId: req.tenantId,
        subscriptionStatus: sub ? subscriptionStatus(sub.status) : SubscriptionStatus.UNSPECIFIED,
        subscriptionId: sub?.id ?? "",
        planId: sub?.plan_id ?? "",
        maxOrderValue:
          plan && plan.maxOrderValueMinor !== null
            ? money(plan.maxOrderValueMinor, plan.currency)
            : undefined,
        asOf: ts(await clockNow(store, req.tenantId)),
      });
    },
  };
}
