import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type AnalyticsService,
  TrackBatchResponseSchema,
  TrackResponseSchema,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import { clientEventInput } from "./convert.ts";
import type { Ingest } from "./ingest.ts";
import { invalid } from "./model.ts";

/** What Track and TrackBatch need. */
export interface TrackingDeps {
  readonly ingest: Pick<Ingest, "accept">;
  /** Counts events acknowledged to clients (metrics). */
  readonly onAccepted?: (events: number) => void;
  readonly now?: () => number;
}

type TrackingHandlers = Pick<ServiceImpl<typeof AnalyticsService>, "track" | "trackBatch">;

/**
 * Track and TrackBatch: the events are stored under the caller's tenant (from the verified token)
 * and acknowledged only once the durable ingest buffer holds them; a full buffer is resource_exhausted.
 */
export function createTrackingHandlers(deps: TrackingDeps): TrackingHandlers {
  const now = deps.now ?? Date.now;
  return {
    async track(req, ctx: HandlerContext) {
      const { tenantId } = requirePrincipal(ctx);
      if (!req.event) throw invalid("event is required");
      const nowMs = now();
      await deps.ingest.accept([clientEventInput(tenantId, req.event, nowMs)]);
      deps.onAccepted?.(1);
      return create(TrackResponseSchema, { acceptTime: timestampFromMs(now()) });
    },
    async trackBatch(req, ctx: HandlerContext) {
      const { tenantId } = requirePrincipal(ctx);
      if (req.events.length === 0 || req.events.length > 1000) throw invalid("1 to 1000 events");
      const nowMs = now();
      await deps.ingest.accept(req.events.map((e) => clientEventInput(tenantId, e, nowMs)));
      deps.onAccepted?.(req.events.length);
      return create(TrackBatchResponseSchema, {
        acceptedCount: req.events.length,
        acceptTime: timestampFromMs(now()),
      });
    },
  };
}
