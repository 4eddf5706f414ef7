import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  Aggregation,
  Bucket,
  type ClientEvent,
  FilterOp,
  Metric,
  type QueryMetricsRequest,
  ReportFormat,
  ReportKind,
  RetentionPeriod,
} from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import {
  type Aggregation as AggregationName,
  type Bucket as BucketName,
  type EventInput,
  type FilterOp as FilterOpName,
  invalid,
  type MetricsQuery,
} from "./model.ts";
import type { ReportFormat as FormatName, ReportKind as KindName } from "./reports.ts";

// The contract's enums as the store's names. Unknown or UNSPECIFIED values were already refused by
// the validation interceptor; the look-ups refuse them again so a handler never guesses.
const buckets: Partial<Record<Bucket, BucketName>> = {
  [Bucket.MINUTE]: "minute",
  [Bucket.HOUR]: "hour",
  [Bucket.DAY]: "day",
};
const aggregations: Partial<Record<Aggregation, AggregationName>> = {
  [Aggregation.COUNT]: "count",
  [Aggregation.UNIQUE_USERS]: "unique_users",
  [Aggregation.SUM]: "sum",
};
const filterOps: Partial<Record<FilterOp, FilterOpName>> = {
  [FilterOp.EQ]: "eq",
  [FilterOp.NEQ]: "neq",
  [FilterOp.IN]: "in",
  [FilterOp.NOT_IN]: "not_in",
  [FilterOp.CONTAINS]: "contains",
  [FilterOp.NOT_CONTAINS]: "not_contains",
  [FilterOp.EXISTS]: "exists",
  [FilterOp.NOT_EXISTS]: "not_exists",
};
const metrics: Partial<Record<Metric, "all_events" | "order_revenue">> = {
  [Metric.ALL_EVENTS]: "all_events",
  [Metric.ORDER_REVENUE]: "order_revenue",
};
const periods: Partial<Record<RetentionPeriod, "day" | "week">> = {
  [RetentionPeriod.DAY]: "day",
  [RetentionPeriod.WEEK]: "week",
};
const kinds: Partial<Record<ReportKind, KindName>> = {
  [ReportKind.ACTIVITY]: "activity",
  [ReportKind.REVENUE]: "revenue",
  [ReportKind.ORDERS]: "orders",
};
const formats: Partial<Record<ReportFormat, FormatName>> = {
  [ReportFormat.CSV]: "csv",
  [ReportFormat.JSON]: "json",
};

function known<K extends number, V>(table: Partial<Record<K, V>>, value: K, what: string): V {
  const name = table[value];
  if (name === undefined) throw invalid(`invalid ${what}`);
  return name;
}

/** A required timestamp as Unix milliseconds; invalid_argument when it is missing. */
export function requiredMs(ts: Timestamp | undefined, what: string): number {
  if (!ts) throw invalid(`${what} is required`);
  return timestampMs(ts);
}

/** A duration in whole milliseconds. */
export function durationMs(d: Duration): number {
  return Number(d.seconds) * 1000 + Math.round(d.nanos / 1_000_000);
}

/** A client event as the store writes it, under the caller's tenant. */
export function clientEventInput(tenantId: string, e: ClientEvent, nowMs: number): EventInput {
  const actor = e.actor.case === "userId" ? { userId: e.actor.value } : { anonymousId: e.actor.value ?? "" };
  return {
    tenantId,
    // UUIDs differ only in case are the same id.
    eventId: e.eventId.toLowerCase(),
    name: e.name,
    source: "client",
    ...actor,
    timeMs: e.time ? timestampMs(e.time) : nowMs,
    receivedAtMs: nowMs,
    props: e.properties,
    numProps: e.numericProperties,
  };
}

/** QueryMetricsRequest as the store's query. */
export function metricsQuery(r: QueryMetricsRequest): MetricsQuery {
  const target =
    r.target.case === "eventName"
      ? { eventName: r.target.value }
      : r.target.case === "metric"
        ? { metric: known(metrics, r.target.value, "metric") }
        : undefined;
  if (!target) throw invalid("event_name or metric is required");
  return {
    target,
    startMs: requiredMs(r.startTime, "start_time"),
    endMs: requiredMs(r.endTime, "end_time"),
    bucket: known(buckets, r.bucket, "bucket"),
    aggregation: known(aggregations, r.aggregation, "aggregation"),
    sumProperty: r.sumProperty || undefined,
    groupBy: r.groupBy || undefined,
    filters: r.filters.map((f) => ({
      property: f.property,
      op: known(filterOps, f.op, "filter op"),
      values: f.values,
    })),
  };
}

/** The store's retention period name. */
export function retentionPeriod(p: RetentionPeriod): "day" | "week" {
  return known(periods, p, "period");
}

/** The store's report kind and format names. */
export function reportSpec(kind: ReportKind, format: ReportFormat): { kind: KindName; format: FormatName } {
  return { kind: known(kinds, kind, "report kind"), format: known(formats, format, "report format") };
}
