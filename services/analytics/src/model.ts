import { Code, ConnectError } from "@connectrpc/connect";
import { isWellFormed } from "./sql.ts";

/** One event as the store writes it; the tenant is the caller's (token) or the domain event's. */
export interface EventInput {
  readonly tenantId: string;
  readonly eventId: string;
  /** Client event name, or a domain event's subject. */
  readonly name: string;
  readonly source: "client" | "domain";
  readonly userId?: string;
  readonly anonymousId?: string;
  /** When it happened, Unix milliseconds. */
  readonly timeMs: number;
  /** When the service accepted it, Unix milliseconds. */
  readonly receivedAtMs: number;
  readonly props?: Readonly<Record<string, string>>;
  readonly numProps?: Readonly<Record<string, number>>;
  /** A domain event's body as protobuf JSON; empty for client events. */
  readonly payload?: string;
}

/** Time bucket widths, aligned to UTC. */
export type Bucket = "minute" | "hour" | "day";
/** How a bucket's events become one value. */
export type Aggregation = "count" | "unique_users" | "sum";
/** Comparisons on a text property (the contract's FilterOp). */
export type FilterOp = "eq" | "neq" | "in" | "not_in" | "contains" | "not_contains" | "exists" | "not_exists";

/** Keeps events whose text property satisfies op. */
export interface PropertyFilter {
  readonly property: string;
  readonly op: FilterOp;
  readonly values: readonly string[];
}

/** A time series request (QueryMetrics without the tenant, which the store takes separately). */
export interface MetricsQuery {
  readonly target: { readonly eventName: string } | { readonly metric: "all_events" | "order_revenue" };
  readonly startMs: number;
  readonly endMs: number;
  readonly bucket: Bucket;
  readonly aggregation: Aggregation;
  readonly sumProperty?: string;
  readonly groupBy?: string;
  readonly filters?: readonly PropertyFilter[];
}

/** One series: a group value and one point per bucket, empty buckets included. */
export interface SeriesResult {
  readonly group: string;
  readonly points: readonly { readonly bucketStartMs: number; readonly value: number }[];
}

/** A time series answer, and which table answered it. */
export interface MetricsResult {
  readonly series: readonly SeriesResult[];
  readonly source: "rollup" | "raw";
}

/** Bucket widths in milliseconds. */
export const BUCKET_MS: Readonly<Record<Bucket, number>> = {
  minute: 60_000,
  hour: 3_600_000,
  day: 86_400_000,
};
/** Longest range per bucket (contract: 7, 92, 366 days). */
export const BUCKET_MAX_RANGE_MS: Readonly<Record<Bucket, number>> = {
  minute: 7 * 86_400_000,
  hour: 92 * 86_400_000,
  day: 366 * 86_400_000,
};
/** Domain subjects used by predefined metrics and reports. */
export const SUBJECTS = {
  orderCreated: "trellis.core.order.created",
  orderConfirmed: "trellis.core.order.confirmed",
  orderFailed: "trellis.core.order.failed",
  orderCancelled: "trellis.core.order.cancelled",
  subscriptionCreated: "trellis.billing.subscription.created",
  subscriptionUpdated: "trellis.billing.subscription.updated",
  subscriptionCanceled: "trellis.billing.subscription.canceled",
  invoicePaid: "trellis.billing.invoice.paid",
} as const;

const NAME = /^[a-zA-Z][a-zA-Z0-9_.:-]{0,99}$/;
const KEY = /^[a-zA-Z][a-zA-Z0-9_.:-]{0,63}$/;
// DateTime holds seconds up to 2106; keep clear of both ends.
const MAX_TIME_MS = 4_102_444_800_000; // 2100-01-01

/** An InvalidArgument error for input the store refuses. */
export function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** Throws unless name is a valid event name. */
export function checkName(name: string, what = "event name"): void {
  if (typeof name !== "string" || !NAME.test(name)) throw invalid(`invalid ${what}`);
}

/** Throws unless key is a valid property key. */
export function checkKey(key: string, what = "property"): void {
  if (typeof key !== "string" || !KEY.test(key)) throw invalid(`invalid ${what}`);
}

/** Throws unless value is well-formed text of at most maxLength characters. */
export function checkText(value: string, maxLength: number, what: string, minLength = 0): void {
  if (
    typeof value !== "string" ||
    value.length > maxLength ||
    value.length < minLength ||
    !isWellFormed(value)
  ) {
    throw invalid(`invalid ${what}`);
  }
}

/** Throws unless ms is an integer time the store can hold. */
export function checkTime(ms: number, what = "time"): void {
  if (!Number.isSafeInteger(ms) || ms < 0 || ms >= MAX_TIME_MS) throw invalid(`invalid ${what}`);
}

/** Throws unless [startMs, endMs) is a valid, ordered range at most maxMs long. */
export function checkRange(startMs: number, endMs: number, maxMs: number): void {
  checkTime(startMs, "start time");
  checkTime(endMs, "end time");
  if (endMs <= startMs) throw invalid("end time must be after start time");
  if (endMs - startMs > maxMs) throw invalid("time range too long");
}

/** Throws unless the filter is well-formed (the contract's rules, checked again in the store). */
export function checkFilter(f: PropertyFilter): void {
  checkKey(f.property, "filter property");
  if (!Array.isArray(f.values) || f.values.length > 100) throw invalid("invalid filter values");
  for (const v of f.values) checkText(v, 1024, "filter value");
  const n = f.values.length;
  const ok =
    f.op === "eq" || f.op === "neq" || f.op === "contains" || f.op === "not_contains"
      ? n === 1
      : f.op === "in" || f.op === "not_in"
        ? n >= 1
        : f.op === "exists" || f.op === "not_exists"
          ? n === 0
          : false;
  if (!ok) throw invalid("invalid filter");
}

/** Start of the UTC day containing ms. */
export function dayStart(ms: number): number {
  return Math.floor(ms / 86_400_000) * 86_400_000;
}

/** Start of the UTC week (Monday) containing ms; 1970-01-01 was a Thursday. */
export function weekStart(ms: number): number {
  const day = Math.floor(ms / 86_400_000);
  return (day - ((day + 3) % 7)) * 86_400_000;
}
