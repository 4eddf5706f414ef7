import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type BillingService,
  RecordUsageRequestSchema,
  RecordUsageResponseSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { UsageRecordedSchema } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { ts } from "./convert.ts";
import { emit } from "./events.ts";
import { type HandlerDeps, idempotent, precondition, tenantOf } from "./handler-kit.ts";
import { newId } from "./ids.ts";
import type { UsageRow } from "./store.ts";

/** RecordUsage: metered usage of the tenant's live subscription, once per idempotency key. */
export function createUsageHandlers(
  deps: HandlerDeps,
): Pick<ServiceImpl<typeof BillingService>, "recordUsage"> {
  return {
    async recordUsage(req, ctx) {
      const tenantId = tenantOf(ctx);
      const call = {
        tenantId,
        key: req.idempotencyKey,
        method: "RecordUsage",
        requestSchema: RecordUsageRequestSchema,
        request: req,
        responseSchema: RecordUsageResponseSchema,
      };
      return idempotent(deps, call, async (s, tx, { now, complete }) => {
        const sub = await s.usageContext(tenantId, req.metric);
        if (!sub) throw precondition("the tenant has no live subscription");
        if (!sub.metered) throw precondition("the plan does not meter this metric");
        const at = req.timestamp ? timestampDate(req.timestamp) : now;
        if (at.getTime() > now.getTime()) {
          throw new ConnectError("timestamp is after the billing clock's now", Code.InvalidArgument);
        }
        if (at.getTime() < sub.current_period_start.getTime()) {
          throw new ConnectError("timestamp is before the current period", Code.InvalidArgument);
        }
        const usage: UsageRow = {
          id: newId("ur"),
          tenant_id: tenantId,
          subscription_id: sub.id,
          plan_id: sub.plan_id,
          metric: req.metric,
          quantity: req.quantity,
          usage_at: at,
          created_at: now,
        };
        const response = create(RecordUsageResponseSchema, {
          usageRecord: {
            usageRecordId: usage.id,
            subscriptionId: sub.id,
            metric: usage.metric,
            quantity: usage.quantity,
            timestamp: ts(at),
          },
        });
        // Issued together, so postgres.js pipelines them on the transaction's connection.
        await Promise.all([
          s.insertUsage(usage),
          emit(tx, UsageRecordedSchema, {
            tenantId,
            usageRecordId: usage.id,
            subscriptionId: sub.id,
            planId: sub.plan_id,
            metric: usage.metric,
            quantity: usage.quantity,
            usageTimestamp: ts(at),
            occurredAt: ts(now),
          }),
          complete(response),
        ]);
        return response;
      });
    },
  };
}
