import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  AdvanceClockResponseSchema,
  type BillingService,
  GetClockResponseSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { advanceTenant, clockNow } from "./clock.ts";
import { ts } from "./convert.ts";
import { type HandlerDeps, tenantOf } from "./handler-kit.ts";
import { zeroCounts } from "./lifecycle.ts";

// Beyond this, one call would run an unbounded number of periods: ten years of monthly renewals is plenty.
const MAX_ADVANCE_MS = 10 * 366 * 86_400_000;

/** GetClock and AdvanceClock: the tenant's billing clock, like a Stripe test clock. */
export function createClockHandlers(
  deps: HandlerDeps,
): Pick<ServiceImpl<typeof BillingService>, "getClock" | "advanceClock"> {
  const { store } = deps;
  return {
    async getClock(_req, ctx) {
      return create(GetClockResponseSchema, { now: ts(await clockNow(store, tenantOf(ctx))) });
    },

    async advanceClock(req, ctx) {
      const tenantId = tenantOf(ctx);
      if (!req.advanceTo) throw new ConnectError("advance_to is required", Code.InvalidArgument);
      const to = timestampDate(req.advanceTo);
      const now = await clockNow(store, tenantId);
      if (to.getTime() <= now.getTime()) {
        return create(AdvanceClockResponseSchema, { now: ts(now), ...zeroCounts() });
      }
      if (to.getTime() - now.getTime() > MAX_ADVANCE_MS) {
        throw new ConnectError("advance at most ten years per call", Code.InvalidArgument);
      }
      const counts = await advanceTenant(store, deps, tenantId, to);
      return create(AdvanceClockResponseSchema, { now: ts(await clockNow(store, tenantId)), ...counts });
    },
  };
}
