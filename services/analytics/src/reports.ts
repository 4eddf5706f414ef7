import { checkRange, dayStart, invalid, SUBJECTS } from "./model.ts";
import type { AnalyticsStore } from "./store.ts";
import type { BillingEvent } from "./store-analysis.ts";

const DAY_MS = 86_400_000;

/** What a report describes. */
export type ReportKind = "activity" | "revenue" | "orders";
/** A report's document format. */
export type ReportFormat = "csv" | "json";

/** A generated document (GenerateReportResponse without the protobuf wrapper). */
export interface ReportDocument {
  readonly contentType: string;
  readonly filename: string;
  readonly content: Uint8Array;
}

/** A table of report rows: column names and values in that order. */
export interface ReportTable {
  readonly columns: readonly string[];
  readonly rows: readonly (readonly (string | number)[])[];
}

function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Revenue per UTC day and currency, derived from billing's events (see the README for definitions). */
export function revenueTable(events: readonly BillingEvent[], startMs: number, endMs: number): ReportTable {
  interface Sub {
    yearly: boolean;
    status: string;
    monthly: number;
    currency: string;
  }
  const subs = new Map<string, Sub>();
  const paying = (s: Sub | undefined) =>
    s &&
    (s.status.endsWith("ACTIVE") || s.status.endsWith("PAST_DUE") || s.status === "2" || s.status === "3")
      ? s.monthly
      : 0;
  const rows: (string | number)[][] = [];
  const currencies = new Set<string>();
  let next = 0;
  for (let day = dayStart(startMs); day < endMs; day += DAY_MS) {
    const flows = new Map<string, { revenue: number; added: number; churned: number; churnedSubs: number }>();
    const flow = (currency: string) => {
      const f = flows.get(currency) ?? { revenue: 0, added: 0, churned: 0, churnedSubs: 0 };
      flows.set(currency, f);
      return f;
    };
    for (; next < events.length && (events[next]?.timeMs ?? 0) < day + DAY_MS; next++) {
      const e = events[next] as BillingEvent;
      const counted = e.timeMs >= startMs && e.timeMs < endMs;
      const id = e.props.subscription_id ?? "";
      const before = paying(subs.get(id));
      const sub = subs.get(id) ?? { yearly: false, status: "", monthly: 0, currency: "" };
      subs.set(id, sub);
      if (e.name === SUBJECTS.subscriptionCreated || e.name === SUBJECTS.subscriptionUpdated) {
        sub.status = e.props.status ?? sub.status;
        if (e.props.interval) sub.yearly = e.props.interval.endsWith("YEAR") || e.props.interval === "2";
      } else if (e.name === SUBJECTS.subscriptionCanceled) {
        sub.status = "SUBSCRIPTION_STATUS_CANCELED";
      } else if (e.name === SUBJECTS.invoicePaid) {
        const amount = e.numProps["amount_paid.amount_minor"] ?? 0;
        sub.currency = e.props["amount_paid.currency"] ?? sub.currency;
        if (sub.status === "") sub.status = "SUBSCRIPTION_STATUS_ACTIVE";
        sub.monthly = sub.yearly ? Math.round(amount / 12) : amount;
        if (counted) flow(sub.currency).revenue += amount;
      }
      if (sub.currency !== "") currencies.add(sub.currency);
      const after = paying(sub);
      if (!counted) continue;
      if (before === 0 && after > 0) flow(sub.currency).added += after;
      if (e.name === SUBJECTS.subscriptionCanceled && before > 0) {
        flow(sub.currency).churned += before;
        flow(sub.currency).churnedSubs += 1;
      }
    }
    for (const currency of [...currencies].sort()) {
      let mrr = 0;
      let active = 0;
      for (const s of subs.values()) {
        if (s.currency !== currency || paying(s) === 0) continue;
        mrr += paying(s);
        active += 1;
      }
      const f = flow(currency);
      rows.push([isoDay(day), currency, mrr, f.revenue, f.added, f.churned, f.churnedSubs, active]);
    }
  }
  return {
    columns: [
      "day",
      "currency",
      "mrr_minor",
      "revenue_minor",
      "new_mrr_minor",
      "churned_mrr_minor",
      "churned_subscriptions",
      "active_subscriptions",
    ],
    rows,
  };
}

/** The rows of a report for one tenant over [startMs, endMs). */
export async function reportTable(
  store: AnalyticsStore,
  tenantId: string,
  kind: ReportKind,
  startMs: number,
  endMs: number,
): Promise<ReportTable> {
  checkRange(startMs, endMs, 366 * DAY_MS);
  if (kind === "activity") {
    const found = new Map((await store.activityRows(tenantId, startMs, endMs)).map((r) => [r.dayMs, r]));
    const rows: (string | number)[][] = [];
    for (let day = dayStart(startMs); day < endMs; day += DAY_MS) {
      const r = found.get(day);
      rows.push([isoDay(day), r?.events ?? 0, r?.activeUsers ?? 0]);
    }
    return { columns: ["day", "events", "active_users"], rows };
  }
  if (kind === "orders") {
    const rows = (await store.orderRows(tenantId, startMs, endMs)).map((r) => [
      isoDay(r.dayMs),
      r.currency,
      r.created,
      r.createdMinor,
      r.confirmed,
      r.confirmedMinor,
      r.failed,
      r.failedMinor,
      r.cancelled,
      r.refundedMinor,
    ]);
    const columns = ["day", "currency", "created", "created_minor", "confirmed", "confirmed_minor", "failed"];
    return { columns: [...columns, "failed_minor", "cancelled", "refunded_minor"], rows };
  }
  if (kind === "revenue") return revenueTable(await store.billingEvents(tenantId, endMs), startMs, endMs);
  throw invalid("invalid report kind");
}

function csvCell(value: string | number): string {
  if (typeof value === "number") return String(value);
  // A leading = + - @ makes spreadsheets evaluate the cell; quote it as text.
  const text = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Renders a report table as a downloadable CSV (header row) or JSON document. */
export function renderReport(
  table: ReportTable,
  kind: ReportKind,
  format: ReportFormat,
  startMs: number,
  endMs: number,
): ReportDocument {
  const base = `${kind}-${isoDay(startMs)}-${isoDay(endMs)}`;
  if (format === "csv") {
    const lines = [table.columns.join(","), ...table.rows.map((r) => r.map(csvCell).join(","))];
    return {
      contentType: "text/csv; charset=utf-8",
      filename: `${base}.csv`,
      content: new TextEncoder().encode(`${lines.join("\r\n")}\r\n`),
    };
  }
  if (format !== "json") throw invalid("invalid report format");
  const rows = table.rows.map((r) => Object.fromEntries(table.columns.map((c, i) => [c, r[i]])));
  const doc = {
    kind,
    start_time: new Date(startMs).toISOString(),
    end_time: new Date(endMs).toISOString(),
    rows,
  };
  return {
    contentType: "application/json",
    filename: `${base}.json`,
    content: new TextEncoder().encode(JSON.stringify(doc)),
  };
}
