import { checkName, checkRange, checkTime, dayStart, invalid, SUBJECTS, weekStart } from "./model.ts";
import { guard, numProp, type StoreContext, strProp, tenantIs, timeIn, toNumber } from "./query-parts.ts";
import { ident, join, type Sql, sql } from "./sql.ts";

const DAY_MS = 86_400_000;
const MAX_RANGE_MS = 366 * DAY_MS;

/** A funnel: ordered step names, a window after the first step, and the range of first steps. */
export interface FunnelQuery {
  readonly steps: readonly string[];
  readonly windowMs: number;
  readonly startMs: number;
  readonly endMs: number;
}

/** A cohort table request; `nowMs` decides which periods are still in the future. */
export interface RetentionQuery {
  readonly cohortEvent: string;
  readonly returnEvent: string;
  readonly period: "day" | "week";
  readonly periods: number;
  readonly startMs: number;
  readonly nowMs: number;
}

/** One cohort: its start, size and returns per period since (future periods omitted). */
export interface CohortResult {
  readonly cohortStartMs: number;
  readonly size: number;
  readonly returned: readonly number[];
}

// The funnel level of one actor, from the sorted times of each step (t1 … tk), in O(n log n)
// with array functions only (18.16's windowFunnel takes second-resolution times, and its lambdas
// cannot capture columns of a subquery). l_i(t) is the latest first step s from which a chain
// s < x2 < … < x_i = t exists; it is a running maximum over the previous step's occurrences
// before t, and since l_{i-1} is non-decreasing it is a running sum of its increments over
// both steps' times merged in order (ties put step i first: later steps are strictly later).
// An actor reaches step i when some t has l_i(t) > 0 and t - l_i(t) <= window.
function liftExpression(prev: Sql, prevTimes: Sql, times: Sql): Sql {
  const keys = sql`arrayConcat(arrayMap(x -> x * 2 + 1, ${prevTimes}), arrayMap(x -> x * 2, ${times}))`;
  const increments = sql`arrayConcat(
    arrayMap((d, p, i) -> if(i = 1, p, d), arrayDifference(${prev}), ${prev}, arrayEnumerate(${prev})),
    arrayMap(x -> toInt64(0), ${times}))`;
  const isCurrent = sql`arrayConcat(arrayMap(x -> 0, ${prevTimes}), arrayMap(x -> 1, ${times}))`;
  return sql`arrayFilter((c, f) -> f = 1,
    arrayCumSum(arraySort((v, k) -> k, ${increments}, ${keys})),
    arraySort((v, k) -> k, ${isCurrent}, ${keys}))`;
}

function levelColumns(steps: number, windowMs: number): Sql {
  const parts: Sql[] = [];
  const branches: Sql[] = [];
  for (let i = 2; i <= steps; i++) {
    const prev = i === 2 ? ident("t1") : ident(`l${i - 1}`);
    parts.push(sql`${liftExpression(prev, ident(`t${i - 1}`), ident(`t${i}`))} AS ${ident(`l${i}`)}`);
    const reached = sql`arrayExists((t, l) -> l > 0 AND t - l <= ${windowMs}, ${ident(`t${i}`)}, ${ident(`l${i}`)})`;
    branches.push(sql`NOT ${reached}, ${i - 1}`);
  }
  return sql`${join(parts, ", ")}, multiIf(${join(branches, ", ")}, ${steps}) AS level`;
}

/** Users reaching each step, in order, within the window after a first step in the range. */
export async function funnel(ctx: StoreContext, tenantId: string, q: FunnelQuery): Promise<number[]> {
  if (!Array.isArray(q.steps) || q.steps.length < 2 || q.steps.length > 10) throw invalid("2 to 10 steps");
  for (const s of q.steps) checkName(s, "step");
  if (!Number.isSafeInteger(q.windowMs) || q.windowMs < 1000 || q.windowMs > 90 * DAY_MS) {
    throw invalid("invalid window");
  }
  checkRange(q.startMs, q.endMs, MAX_RANGE_MS);
  const arrays = q.steps.map((name, i) =>
    i === 0
      ? sql`arraySort(groupArrayIf(time_ms, name = ${name} AND time_ms >= ${q.startMs} AND time_ms < ${q.endMs})) AS t1`
      : sql`arraySort(groupArrayIf(time_ms, name = ${name})) AS ${ident(`t${i + 1}`)}`,
  );
  const statement = sql`SELECT level, count() AS users FROM (
    SELECT ${levelColumns(q.steps.length, q.windowMs)} FROM (
      SELECT actor, ${join(arrays, ", ")}
      FROM ${ctx.tables.events}
      WHERE ${tenantIs(tenantId)} AND actor != '' AND name IN ${q.steps} AND ${timeIn(q.startMs, q.endMs + q.windowMs)}
      GROUP BY actor
    ) WHERE length(t1) > 0
  ) GROUP BY level`;
  const rows = await guard(() => ctx.ch.query<{ level: unknown; users: unknown }>(statement));
  const reached = q.steps.map(() => 0);
  for (const r of rows) {
    const level = toNumber(r.level);
    for (let i = 0; i < level && i < reached.length; i++) reached[i] = (reached[i] ?? 0) + toNumber(r.users);
  }
  return reached;
}

/** The cohort table: actors by the period of their first cohort event, and their returns. */
export async function retention(
  ctx: StoreContext,
  tenantId: string,
  q: RetentionQuery,
): Promise<CohortResult[]> {
  checkName(q.cohortEvent, "cohort event");
  checkName(q.returnEvent, "return event");
  if (q.period !== "day" && q.period !== "week") throw invalid("invalid period");
  if (!Number.isSafeInteger(q.periods) || q.periods < 1 || q.periods > 52)
    throw invalid("periods must be 1 to 52");
  checkTime(q.startMs, "start time");
  checkTime(q.nowMs, "now");
  const len = q.period === "day" ? DAY_MS : 7 * DAY_MS;
  const first = q.period === "day" ? dayStart(q.startMs) : weekStart(q.startMs);
  const cohortsEnd = first + q.periods * len;
  const returnsEnd = first + (2 * q.periods - 1) * len;
  checkTime(returnsEnd, "end of the table");
  const c = q.cohortEvent;
  const r = q.returnEvent;
  // The cohort side reads all history before the last cohort: the first occurrence ever decides.
  // One row per (cohort, period returned in), period -1 standing for "in the cohort"; no lambdas,
  // since 18.16's cannot capture a subquery's columns.
  const statement = sql`SELECT cohort, period, count() AS actors FROM (
    SELECT cohort, arrayJoin(arrayConcat([toInt64(-1)], rets)) AS period FROM (
      SELECT intDiv(first - ${first}, ${len}) AS cohort, rets FROM (
        SELECT actor, minIf(time_ms, name = ${c}) AS first,
          groupUniqArrayIf(intDiv(time_ms - ${first}, ${len}), name = ${r} AND time_ms >= ${first} AND time_ms < ${returnsEnd}) AS rets
        FROM ${ctx.tables.events}
        WHERE ${tenantIs(tenantId)} AND actor != '' AND (
          (name = ${c} AND ${timeIn(0, cohortsEnd)}) OR (name = ${r} AND ${timeIn(first, returnsEnd)}))
        GROUP BY actor
      ) WHERE first >= ${first} AND first < ${cohortsEnd}
    )) GROUP BY cohort, period`;
  const rows = await guard(() =>
    ctx.ch.query<{ cohort: unknown; period: unknown; actors: unknown }>(statement),
  );
  const counts = new Map<string, number>();
  for (const row of rows) {
    const cohort = toNumber(row.cohort);
    const period = toNumber(row.period);
    counts.set(`${cohort}:${period < 0 ? -1 : period - cohort}`, toNumber(row.actors));
  }
  const result: CohortResult[] = [];
  for (let i = 0; i < q.periods; i++) {
    const cohortStartMs = first + i * len;
    if (cohortStartMs > q.nowMs) break;
    const visible = Math.min(q.periods, Math.floor((q.nowMs - cohortStartMs) / len) + 1);
    const returned = Array.from({ length: visible }, (_, k) => counts.get(`${i}:${k}`) ?? 0);
    result.push({ cohortStartMs, size: counts.get(`${i}:-1`) ?? 0, returned });
  }
  return result;
}

/** Activity per UTC day: events and distinct active actors. */
export interface ActivityRow {
  readonly dayMs: number;
  readonly events: number;
  readonly activeUsers: number;
}

/** Activity report rows, one per day with events. */
export async function activityRows(
  ctx: StoreContext,
  tenantId: string,
  startMs: number,
  endMs: number,
): Promise<ActivityRow[]> {
  checkRange(startMs, endMs, MAX_RANGE_MS);
  const rows = await guard(() =>
    ctx.ch.query<{ day: unknown; events: unknown; users: unknown }>(sql`
      SELECT intDiv(time_ms, ${DAY_MS}) * ${DAY_MS} AS day, count() AS events, uniqExactIf(actor, actor != '') AS users
      FROM (SELECT event_id, time_ms, actor FROM ${ctx.tables.events}
        WHERE ${tenantIs(tenantId)} AND ${timeIn(startMs, endMs)} LIMIT 1 BY event_id)
      GROUP BY day ORDER BY day`),
  );
  return rows.map((r) => ({
    dayMs: toNumber(r.day),
    events: toNumber(r.events),
    activeUsers: toNumber(r.users),
  }));
}

/** Orders per UTC day and currency, from core's order events (amounts in minor units). */
export interface OrderRow {
  readonly dayMs: number;
  readonly currency: string;
  readonly created: number;
  readonly createdMinor: number;
  readonly confirmed: number;
  readonly confirmedMinor: number;
  readonly failed: number;
  readonly failedMinor: number;
  readonly cancelled: number;
  readonly refundedMinor: number;
}

/** Orders report rows, one per day and currency with order events. */
export async function orderRows(
  ctx: StoreContext,
  tenantId: string,
  startMs: number,
  endMs: number,
): Promise<OrderRow[]> {
  checkRange(startMs, endMs, MAX_RANGE_MS);
  const { orderCreated, orderConfirmed, orderFailed, orderCancelled } = SUBJECTS;
  const cancelled = sql`name = ${orderCancelled}`;
  const rows = await guard(() =>
    ctx.ch.query<Record<string, unknown>>(sql`
      SELECT day, currency,
        countIf(name = ${orderCreated}) AS created, sumIf(amount, name = ${orderCreated}) AS created_minor,
        countIf(name = ${orderConfirmed}) AS confirmed, sumIf(amount, name = ${orderConfirmed}) AS confirmed_minor,
        countIf(name = ${orderFailed}) AS failed, sumIf(amount, name = ${orderFailed}) AS failed_minor,
        countIf(${cancelled}) AS cancelled, sumIf(amount, ${cancelled}) AS refunded_minor
      FROM (
        SELECT event_id, name, intDiv(time_ms, ${DAY_MS}) * ${DAY_MS} AS day,
          if(${cancelled}, ${strProp("refunded.currency")}, ${strProp("total.currency")}) AS currency,
          if(${cancelled}, ${numProp("refunded.amount_minor")}, ${numProp("total.amount_minor")}) AS amount
        FROM ${ctx.tables.events}
        WHERE ${tenantIs(tenantId)} AND name IN ${[orderCreated, orderConfirmed, orderFailed, orderCancelled]}
          AND ${timeIn(startMs, endMs)}
        LIMIT 1 BY event_id)
      GROUP BY day, currency ORDER BY day, currency`),
  );
  return rows.map((r) => ({
    dayMs: toNumber(r.day),
    currency: String(r.currency ?? ""),
    created: toNumber(r.created),
    createdMinor: toNumber(r.created_minor),
    confirmed: toNumber(r.confirmed),
    confirmedMinor: toNumber(r.confirmed_minor),
    failed: toNumber(r.failed),
    failedMinor: toNumber(r.failed_minor),
    cancelled: toNumber(r.cancelled),
    refundedMinor: toNumber(r.refunded_minor),
  }));
}

/** A billing event as the revenue report reads it. */
export interface BillingEvent {
  readonly name: string;
  readonly timeMs: number;
  readonly props: Readonly<Record<string, string>>;
  readonly numProps: Readonly<Record<string, number>>;
}

/** Subscription and invoice.paid events before endMs, oldest first, each id once. */
export async function billingEvents(
  ctx: StoreContext,
  tenantId: string,
  endMs: number,
): Promise<BillingEvent[]> {
  checkTime(endMs, "end time");
  const names = [
    SUBJECTS.subscriptionCreated,
    SUBJECTS.subscriptionUpdated,
    SUBJECTS.subscriptionCanceled,
    SUBJECTS.invoicePaid,
  ];
  const rows = await guard(() =>
    ctx.ch.query<{
      name: string;
      time_ms: unknown;
      sk: string[];
      sv: string[];
      nk: string[];
      nv: unknown[];
    }>(sql`
      SELECT name, time_ms, str_keys AS sk, str_values AS sv, num_keys AS nk, num_values AS nv
      FROM ${ctx.tables.events}
      WHERE ${tenantIs(tenantId)} AND name IN ${names} AND ${timeIn(0, endMs)}
      ORDER BY time_ms, event_id LIMIT 1 BY event_id`),
  );
  return rows.map((r) => ({
    name: r.name,
    timeMs: toNumber(r.time_ms),
    props: Object.fromEntries(r.sk.map((k, i) => [k, r.sv[i] ?? ""])),
    numProps: Object.fromEntries(r.nk.map((k, i) => [k, toNumber(r.nv[i])])),
  }));
}
