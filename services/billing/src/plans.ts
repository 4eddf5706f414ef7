import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type BillingService,
  CreatePlanRequestSchema,
  CreatePlanResponseSchema,
  ListPlansResponseSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { intervals, toPlan } from "./convert.ts";
import { type HandlerDeps, idempotent, nextPage, pageOf, tenantOf } from "./handler-kit.ts";
import { newId } from "./ids.ts";
import type { PlanRow } from "./store.ts";

/** ListPlans and CreatePlan: the catalog every tenant subscribes from. */
export function createPlanHandlers(
  deps: HandlerDeps,
): Pick<ServiceImpl<typeof BillingService>, "listPlans" | "createPlan"> {
  const { store } = deps;
  return {
    async listPlans(req) {
      const { size, after } = pageOf(req.page);
      const page = nextPage(await store.listPlans(after, size + 1), size);
      return create(ListPlansResponseSchema, {
        plans: page.rows.map(toPlan),
        page: { nextPageToken: page.token },
      });
    },

    async createPlan(req, ctx) {
      const tenantId = tenantOf(ctx);
      return idempotent(
        deps,
        {
          tenantId,
          key: req.idempotencyKey,
          method: "CreatePlan",
          requestSchema: CreatePlanRequestSchema,
          request: req,
          responseSchema: CreatePlanResponseSchema,
        },
        async (s, _tx, { now }) => {
          const plan: PlanRow = {
            id: newId("plan"),
            name: req.name,
            description: req.description,
            currency: req.currency,
            trialDays: req.trialDays,
            maxOrderValueMinor: req.maxOrderValue ? req.maxOrderValue.amountMinor : null,
            createdAt: now,
            prices: req.prices.map((p) => ({
              interval: intervals.fromProto(p.interval),
              amountMinor: p.amount?.amountMinor ?? 0n,
            })),
            components: req.meteredComponents.map((c) => ({
              metric: c.metric,
              unitPriceMinor: c.unitPrice?.amountMinor ?? 0n,
              includedQuantity: c.includedQuantity,
            })),
          };
          await s.insertPlan(plan);
          return create(CreatePlanResponseSchema, { plan: toPlan(plan) });
        },
      );
    },
  };
}
