import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  type AnalyticsService,
  CohortRowSchema,
  FunnelResponseSchema,
  FunnelStepSchema,
  GenerateReportResponseSchema,
  PointSchema,
  QueryMetricsResponseSchema,
  RetentionResponseSchema,
  SeriesSchema,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import { durationMs, metricsQuery, reportSpec, requiredMs, retentionPeriod } from "./convert.ts";
import { invalid } from "./model.ts";
import { renderReport, reportTable } from "./reports.ts";
import type { AnalyticsStore } from "./store.ts";

/** What the query RPCs need. */
export interface QueryDeps {
  readonly store: AnalyticsStore;
  readonly now?: () => number;
}

type QueryHandlers = Pick<
  ServiceImpl<typeof AnalyticsService>,
  "queryMetrics" | "funnel" | "retention" | "generateReport"
>;

const ratio = (a: number, b: number) => (b === 0 ? 0 : a / b);

/** QueryMetrics, Funnel, Retention and GenerateReport, each scoped to the caller's tenant by the store. */
export function createQueryHandlers(deps: QueryDeps): QueryHandlers {
  const { store } = deps;
  const now = deps.now ?? Date.now;
  const tenantOf = (ctx: HandlerContext) => requirePrincipal(ctx).tenantId;
  return {
    async queryMetrics(req, ctx) {
      const tenantId = tenantOf(ctx);
      const result = await store.queryMetrics(tenantId, metricsQuery(req));
      return create(QueryMetricsResponseSchema, {
        series: result.series.map((s) =>
          create(SeriesSchema, {
            group: s.group,
            points: s.points.map((p) =>
              create(PointSchema, { bucketStart: timestampFromMs(p.bucketStartMs), value: p.value }),
            ),
          }),
        ),
      });
    },

    async funnel(req, ctx) {
      const tenantId = tenantOf(ctx);
      if (!req.window) throw invalid("window is required");
      const users = await store.funnel(tenantId, {
        steps: req.steps,
        windowMs: durationMs(req.window),
        startMs: requiredMs(req.startTime, "start_time"),
        endMs: requiredMs(req.endTime, "end_time"),
      });
      const first = users[0] ?? 0;
      return create(FunnelResponseSchema, {
        steps: req.steps.map((eventName, i) => {
          const n = users[i] ?? 0;
          return create(FunnelStepSchema, {
            eventName,
            users: BigInt(n),
            conversionFromPrevious: i === 0 ? (n > 0 ? 1 : 0) : ratio(n, users[i - 1] ?? 0),
            conversionFromFirst: i === 0 ? (n > 0 ? 1 : 0) : ratio(n, first),
          });
        }),
      });
    },

    async retention(req, ctx) {
      const tenantId = tenantOf(ctx);
      const cohorts = await store.retention(tenantId, {
        cohortEvent: req.cohortEvent,
        returnEvent: req.returnEvent,
        period: retentionPeriod(req.period),
        periods: req.periods,
        startMs: requiredMs(req.startTime, "start_time"),
        nowMs: now(),
      });
      return create(RetentionResponseSchema, {
        rows: cohorts.map((c) =>
          create(CohortRowSchema, {
            cohortStart: timestampFromMs(c.cohortStartMs),
            cohortSize: BigInt(c.size),
            returned: c.returned.map((n) => BigInt(n)),
            retention: c.returned.map((n) => ratio(n, c.size)),
          }),
        ),
      });
    },

    async generateReport(req, ctx) {
      const tenantId = tenantOf(ctx);
      const { kind, format } = reportSpec(req.kind, req.format);
      const startMs = requiredMs(req.startTime, "start_time");
      const endMs = requiredMs(req.endTime, "end_time");
      const table = await reportTable(store, tenantId, kind, startMs, endMs);
      return create(GenerateReportResponseSchema, renderReport(table, kind, format, startMs, endMs));
    },
  };
}
