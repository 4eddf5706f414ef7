import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type BillingService,
  CancelSubscriptionRequestSchema,
  CancelSubscriptionResponseSchema,
  ChangePlanRequestSchema,
  ChangePlanResponseSchema,
  CreateSubscriptionRequestSchema,
  CreateSubscriptionResponseSchema,
  GetSubscriptionResponseSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { SubscriptionCreatedSchema } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { intervals, money, subscriptionStatus, toSubscription, ts } from "./convert.ts";
import { emit } from "./events.ts";
import { customerMutation, type HandlerDeps, notFound, precondition, tenantOf } from "./handler-kit.ts";
import { isOwnId, newId } from "./ids.ts";
import {
  addLine,
  cancelSubscription,
  closeFinalInvoice,
  emitUpdated,
  ensureDraft,
  planLabel,
  priceOf,
  zeroCounts,
} from "./lifecycle.ts";
import { prorate } from "./money.ts";
import { attemptPayment, finalize } from "./payments-engine.ts";
import { addIntervals, DAY_MS, formatDay } from "./periods.ts";
import type { SubscriptionRow } from "./store.ts";

/** CreateSubscription, GetSubscription, ChangePlan and CancelSubscription. */
export function createSubscriptionHandlers(
  deps: HandlerDeps,
): Pick<
  ServiceImpl<typeof BillingService>,
  "createSubscription" | "getSubscription" | "changePlan" | "cancelSubscription"
> {
  const { store } = deps;
  return {
    async createSubscription(req, ctx) {
      const tenantId = tenantOf(ctx);
      const call = {
        tenantId,
        key: req.idempotencyKey,
        method: "CreateSubscription",
        requestSchema: CreateSubscriptionRequestSchema,
        request: req,
        responseSchema: CreateSubscriptionResponseSchema,
      };
      return customerMutation(deps, call, async (s, tx, { now }, customer) => {
        const current = await s.currentSubscription(tenantId);
        if (current && current.status !== "canceled")
          throw new ConnectError("the tenant already has a subscription", Code.AlreadyExists);
        const plan = await s.getPlan(req.planId);
        if (!plan) throw notFound("plan");
        const interval = intervals.fromProto(req.interval);
        const price = priceOf(plan, interval);
        if (price === undefined) throw precondition(`the plan has no ${interval} price`);
        let paymentMethodId: string | null = null;
        if (req.paymentMethodId !== "") {
          const pm = isOwnId(req.paymentMethodId, "pm")
            ? await s.getPaymentMethod(tenantId, req.paymentMethodId)
            : undefined;
          if (!pm) throw notFound("payment method");
          paymentMethodId = pm.id;
        } else if (plan.trialDays === 0 && customer.defaultPaymentMethodId === null && price > 0n) {
          throw precondition("a payment method is needed for a plan without trial");
        }
        const trialEnd = plan.trialDays > 0 ? new Date(now.getTime() + plan.trialDays * DAY_MS) : null;
        const periodEnd = trialEnd ?? addIntervals(now, interval, 1);
        let sub: SubscriptionRow = {
          id: newId("sub"),
          tenant_id: tenantId,
          plan_id: plan.id,
          interval,
          status: trialEnd ? "trialing" : "active",
          payment_method_id: paymentMethodId,
          trial_ends_at: trialEnd,
          billing_anchor: periodEnd === trialEnd ? periodEnd : now,
          current_period_start: now,
          current_period_end: periodEnd,
          cancel_at_period_end: false,
          canceled_at: null,
          cancellation_reason: null,
          created_at: now,
        };
        await s.insertSubscription(sub);
        if (!trialEnd) {
          // No trial: the first period is invoiced and collected now.
          const draft = await ensureDraft(s, sub, plan, now);
          await addLine(s, draft, {
            kind: "subscription",
            description: `${planLabel(plan, interval)}, ${formatDay(now)} – ${formatDay(periodEnd)}`,
            planId: plan.id,
            quantity: 1n,
            unitAmountMinor: price,
            periodStart: now,
            periodEnd,
          });
          const invoice = await finalize(s, tx, deps, draft, now);
          const outcome = await attemptPayment(s, tx, deps, {
            invoice,
            subscription: sub,
            at: now,
            providerKey: `subscribe:${tenantId}:${req.idempotencyKey}:attempt:1`,
          });
          if (!outcome.paid) {
            sub = { ...sub, status: "past_due" };
            await s.updateSubscription(sub);
          }
        }
        await emit(tx, SubscriptionCreatedSchema, {
          tenantId,
          subscriptionId: sub.id,
          planId: sub.plan_id,
          interval: intervals.toProto(sub.interval),
          status: subscriptionStatus(sub.status),
          trialEndsAt: ts(sub.trial_ends_at),
          currentPeriodEnd: ts(sub.current_period_end),
          occurredAt: ts(now),
        });
        return create(CreateSubscriptionResponseSchema, { subscription: toSubscription(sub) });
      });
    },

    async getSubscription(req, ctx) {
      const tenantId = tenantOf(ctx);
      const sub =
        req.subscriptionId === ""
          ? await store.currentSubscription(tenantId)
          : await store.getSubscription(tenantId, req.subscriptionId);
      if (!sub) throw notFound("subscription");
      return create(GetSubscriptionResponseSchema, { subscription: toSubscription(sub) });
    },

    async changePlan(req, ctx) {
      const tenantId = tenantOf(ctx);
      const call = {
        tenantId,
        key: req.idempotencyKey,
        method: "ChangePlan",
        requestSchema: ChangePlanRequestSchema,
        request: req,
        responseSchema: ChangePlanResponseSchema,
      };
      return customerMutation(deps, call, async (s, tx, { now }) => {
        const sub = await s.getSubscription(tenantId, req.subscriptionId, true);
        if (!sub) throw notFound("subscription");
        if (sub.status === "canceled") throw precondition("the subscription is canceled");
        const [oldPlan, newPlan] = [await s.getPlan(sub.plan_id), await s.getPlan(req.planId)];
        if (!newPlan) throw notFound("plan");
        if (!oldPlan) throw new Error(`plan ${sub.plan_id} is missing`);
        const interval = intervals.fromProto(req.interval);
        const newPrice = priceOf(newPlan, interval);
        if (newPrice === undefined) throw precondition(`the plan has no ${interval} price`);
        if (newPlan.currency !== oldPlan.currency)
          throw precondition("the new plan bills in another currency");
        let net = 0n;
        if (sub.status !== "trialing" && (newPlan.id !== oldPlan.id || interval !== sub.interval)) {
          const oldPrice = priceOf(oldPlan, sub.interval) ?? 0n;
          const start = sub.current_period_start;
          const end = sub.current_period_end;
          const p = prorate({
            oldAmountMinor: oldPrice,
            newAmountMinor: newPrice,
            periodStartMs: start.getTime(),
            periodEndMs: end.getTime(),
            changeAtMs: now.getTime(),
            newIntervalMs: addIntervals(start, interval, 1).getTime() - start.getTime(),
          });
          net = p.netMinor;
          const draft = await ensureDraft(s, sub, newPlan, now);
          const span = { periodStart: now, periodEnd: end, quantity: 1n, kind: "proration" as const };
          if (p.creditMinor !== 0n) {
            await addLine(s, draft, {
              ...span,
              description: `Unused time on ${planLabel(oldPlan, sub.interval)} after ${formatDay(now)}`,
              planId: oldPlan.id,
              unitAmountMinor: p.creditMinor,
            });
          }
          if (p.chargeMinor !== 0n) {
            await addLine(s, draft, {
              ...span,
              description: `Remaining time on ${planLabel(newPlan, interval)} after ${formatDay(now)}`,
              planId: newPlan.id,
              unitAmountMinor: p.chargeMinor,
            });
          }
        }
        const after: SubscriptionRow = {
          ...sub,
          plan_id: newPlan.id,
          interval,
          // A new interval counts from the end of this period.
          billing_anchor: interval === sub.interval ? sub.billing_anchor : sub.current_period_end,
        };
        await s.updateSubscription(after);
        const proration = money(net, newPlan.currency);
        await emitUpdated(tx, sub, after, now, proration);
        return create(ChangePlanResponseSchema, { subscription: toSubscription(after), proration });
      });
    },

    async cancelSubscription(req, ctx) {
      const tenantId = tenantOf(ctx);
      const call = {
        tenantId,
        key: req.idempotencyKey,
        method: "CancelSubscription",
        requestSchema: CancelSubscriptionRequestSchema,
        request: req,
        responseSchema: CancelSubscriptionResponseSchema,
      };
      return customerMutation(deps, call, async (s, tx, { now }) => {
        const sub = await s.getSubscription(tenantId, req.subscriptionId, true);
        if (!sub) throw notFound("subscription");
        if (sub.status === "canceled") throw precondition("the subscription is already canceled");
        let after: SubscriptionRow;
        if (req.atPeriodEnd) {
          after = { ...sub, cancel_at_period_end: true };
          await s.updateSubscription(after);
          await emitUpdated(tx, sub, after, now);
        } else {
          const plan = await s.getPlan(sub.plan_id);
          if (!plan) throw new Error(`plan ${sub.plan_id} is missing`);
          await closeFinalInvoice(s, tx, deps, sub, plan, now, zeroCounts());
          after = await cancelSubscription(s, tx, sub, now, "requested");
        }
        return create(CancelSubscriptionResponseSchema, { subscription: toSubscription(after) });
      });
    },
  };
}
