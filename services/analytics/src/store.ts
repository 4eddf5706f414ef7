import type { ClickHouse } from "./clickhouse.ts";
import {
  BUCKET_MAX_RANGE_MS,
  BUCKET_MS,
  checkKey,
  checkName,
  checkRange,
  checkText,
  checkTime,
  type EventInput,
  invalid,
  type MetricsQuery,
  type MetricsResult,
  type SeriesResult,
  SUBJECTS,
} from "./model.ts";
import {
  filtersCondition,
  guard,
  numProp,
  type StoreContext,
  strProp,
  tenantIs,
  timeIn,
  toNumber,
} from "./query-parts.ts";
import { schemaStatements, tablesOf } from "./schema.ts";
import { type Sql, sql } from "./sql.ts";
import {
  activityRows,
  billingEvents,
  type FunnelQuery,
  funnel,
  orderRows,
  type RetentionQuery,
  retention,
} from "./store-analysis.ts";

// Duplicates by event id. The insert path drops rows whose (tenant, event id) is already stored
// (an indexed look-up in event_ids, which a materialized view fills in the same INSERT), and
// inserts are serialized per store, so a redelivered batch or a retried Track adds nothing:
// the per-minute rollup's countState stays exact. Queries over the raw table still dedupe
// (LIMIT 1 BY event_id) where a copy would change the answer (counts and sums), which covers the
// one residual case: two processes inserting the same new id at the same moment. That race can
// only make the rollup, not the raw answer, count a copy until such a pair is repaired.

/** Everything the analytics service asks of ClickHouse; every query is scoped to one tenant. */
export interface AnalyticsStore {
  /** Creates the database, tables and materialized views (idempotent). */
  migrate(): Promise<void>;
  /** Writes events, skipping ids already stored; answers how many rows were new. */
  insertEvents(events: readonly EventInput[]): Promise<number>;
  /** Writes row blocks (see toRowBlocks), skipping ids already stored or repeated; answers how many rows were new. */
  insertBlocks(blocks: readonly RowBlock[]): Promise<number>;
  /** A time series (QueryMetrics); the rollup answers when it can give the same result. */
  queryMetrics(tenantId: string, query: MetricsQuery): Promise<MetricsResult>;
  /** Event counts per name in [startMs, endMs), for WatchMetrics; empty names means all. */
  liveCounts(
    tenantId: string,
    names: readonly string[],
    startMs: number,
    endMs: number,
  ): Promise<Map<string, number>>;
  /** Users reaching each funnel step in order within the window. */
  funnel(tenantId: string, query: FunnelQuery): Promise<number[]>;
  /** Cohort sizes and returns per period. */
  retention(tenantId: string, query: RetentionQuery): ReturnType<typeof retention>;
  /** Activity report rows per UTC day. */
  activityRows(tenantId: string, startMs: number, endMs: number): ReturnType<typeof activityRows>;
  /** Orders report rows per UTC day and currency. */
  orderRows(tenantId: string, startMs: number, endMs: number): ReturnType<typeof orderRows>;
  /** Billing's subscription and invoice events before endMs, oldest first, for the revenue report. */
  billingEvents(tenantId: string, endMs: number): ReturnType<typeof billingEvents>;
  /** Drops the deployment's database (tests). */
  dropDatabase(): Promise<void>;
}

/** Options for {@link createAnalyticsStore}. */
export interface AnalyticsStoreOptions {
  readonly clickhouse: ClickHouse;
  /** Database of this deployment: a plain identifier from config. */
  readonly database: string;
}

const MAX_GROUPS = 50;
const ID_CHUNK = 20_000;

function toRow(e: EventInput): Record<string, unknown> {
  tenantIs(e.tenantId);
  checkText(e.eventId, 128, "event id", 1);
  checkName(e.name);
  if (e.source !== "client" && e.source !== "domain") throw invalid("invalid source");
  const userId = e.userId ?? "";
  const anonymousId = e.anonymousId ?? "";
  checkText(userId, 128, "user id");
  checkText(anonymousId, 128, "anonymous id");
  checkTime(e.timeMs);
  checkTime(e.receivedAtMs, "received time");
  const strKeys = Object.keys(e.props ?? {});
  const numKeys = Object.keys(e.numProps ?? {});
  for (const k of strKeys) {
    checkKey(k);
    checkText(e.props?.[k] ?? "", 1024, "property value");
  }
  for (const k of numKeys) {
    checkKey(k);
    if (!Number.isFinite(e.numProps?.[k])) throw invalid("invalid numeric property");
  }
  checkText(e.payload ?? "", 1 << 20, "payload");
  return {
    tenant_id: e.tenantId,
    event_id: e.eventId,
    name: e.name,
    source: e.source,
    user_id: userId,
    anonymous_id: anonymousId,
    actor: userId !== "" ? `u:${userId}` : anonymousId !== "" ? `a:${anonymousId}` : "",
    time: Math.floor(e.timeMs / 1000),
    time_ms: e.timeMs,
    str_keys: strKeys,
    str_values: strKeys.map((k) => e.props?.[k] ?? ""),
    num_keys: numKeys,
    num_values: numKeys.map((k) => e.numProps?.[k] ?? 0),
    payload: e.payload ?? "",
    received_at: Math.floor(e.receivedAtMs / 1000),
  };
}

/**
 * Rows of one tenant ready to insert: `body` is JSONEachRow text, one line per id of `ids`, in
 * the same order, each a checked row; no id appears twice. The ingest buffer carries blocks as
 * they are, so events are checked and serialized once, when they are accepted.
 */
export interface RowBlock {
  readonly tenantId: string;
  readonly ids: readonly string[];
  readonly body: Uint8Array;
}

/** Checks events (InvalidArgument as the store would answer) and makes one block per tenant, first of a repeated id kept. */
export function toRowBlocks(events: readonly EventInput[]): RowBlock[] {
  const byTenant = new Map<string, { ids: string[]; lines: string[]; seen: Set<string> }>();
  for (const e of events) {
    const line = JSON.stringify(toRow(e));
    let block = byTenant.get(e.tenantId);
    if (block === undefined) {
      block = { ids: [], lines: [], seen: new Set() };
      byTenant.set(e.tenantId, block);
    }
    if (block.seen.has(e.eventId)) continue;
    block.seen.add(e.eventId);
    block.ids.push(e.eventId);
    block.lines.push(line);
  }
  return [...byTenant].map(([tenantId, b]) => ({
    tenantId,
    ids: b.ids,
    body: Buffer.from(`${b.lines.join("\n")}\n`),
  }));
}

const NEWLINE = 0x0a;

// Throws unless block has one line per id (what toRowBlocks makes): a block read from the ingest
// stream is not trusted.
function checkBlock(block: RowBlock): void {
  tenantIs(block.tenantId);
  const body = block.body;
  let lines = 0;
  for (let i = body.indexOf(NEWLINE); i !== -1; i = body.indexOf(NEWLINE, i + 1)) lines++;
  if (lines !== block.ids.length || (body.byteLength > 0 && body[body.byteLength - 1] !== NEWLINE)) {
    throw invalid("row block: one line per event id expected");
  }
}

// The lines of block whose ids are not yet in seen (adding them), as JSONEachRow text.
function freshLines(block: RowBlock, seen: Set<string>): { body: Uint8Array; rows: number } {
  let repeated = false;
  for (const id of block.ids) {
    if (seen.has(id)) {
      repeated = true;
      break;
    }
  }
  if (!repeated) {
    for (const id of block.ids) seen.add(id);
    return { body: block.body, rows: block.ids.length };
  }
  const lines = Buffer.from(block.body).toString("utf8").split("\n");
  const kept: string[] = [];
  block.ids.forEach((id, i) => {
    if (seen.has(id)) return;
    seen.add(id);
    kept.push(lines[i] as string);
  });
  return { body: Buffer.from(kept.length === 0 ? "" : `${kept.join("\n")}\n`), rows: kept.length };
}

function checkMetricsQuery(q: MetricsQuery): void {
  if (!(q.bucket in BUCKET_MS)) throw invalid("invalid bucket");
  checkRange(q.startMs, q.endMs, BUCKET_MAX_RANGE_MS[q.bucket]);
  if (!["count", "unique_users", "sum"].includes(q.aggregation)) throw invalid("invalid aggregation");
  if ("eventName" in q.target) checkName(q.target.eventName);
  else if (q.target.metric !== "all_events" && q.target.metric !== "order_revenue")
    throw invalid("invalid metric");
  if (q.groupBy) checkKey(q.groupBy, "group_by");
  if (q.sumProperty) checkKey(q.sumProperty, "sum_property");
  const revenue = "metric" in q.target && q.target.metric === "order_revenue";
  if (q.aggregation === "sum" && !revenue && !q.sumProperty) throw invalid("sum_property is required");
}

/** Fills every bucket of [startMs, endMs) from sparse (bucket start → value) pairs. */
function fillPoints(q: MetricsQuery, buckets: readonly unknown[], values: readonly unknown[]) {
  const width = BUCKET_MS[q.bucket];
  const byStart = new Map<number, number>();
  buckets.forEach((b, i) => {
    byStart.set(toNumber(b), toNumber(values[i]));
  });
  const points: { bucketStartMs: number; value: number }[] = [];
  for (let t = Math.floor(q.startMs / width) * width; t < q.endMs; t += width) {
    points.push({ bucketStartMs: t, value: byStart.get(t) ?? 0 });
  }
  return points;
}

function metricsSql(
  ctx: StoreContext,
  tenantId: string,
  q: MetricsQuery,
): { statement: Sql; rollup: boolean } {
  const width = BUCKET_MS[q.bucket];
  const revenue = "metric" in q.target && q.target.metric === "order_revenue";
  const name = "eventName" in q.target ? q.target.eventName : revenue ? SUBJECTS.orderConfirmed : undefined;
  const nameIs = name === undefined ? sql`1` : sql`name = ${name}`;
  const groupBy = revenue ? "total.currency" : q.groupBy || undefined;
  const aggregation = revenue ? "sum" : q.aggregation;
  const noFilters = !q.filters || q.filters.length === 0;
  const aligned = q.startMs % 60_000 === 0 && q.endMs % 60_000 === 0;
  if (aggregation !== "sum" && !groupBy && noFilters && aligned) {
    const value =
      aggregation === "count"
        ? sql`toFloat64(countMerge(events))`
        : sql`toFloat64(uniqExactMerge(actors) - maxMerge(actorless))`;
    const startS = q.startMs / 1000;
    const endS = q.endMs / 1000;
    const inner = sql`SELECT intDiv(toInt64(toUInt32(minute)) * 1000, ${width}) * ${width} AS b, ${value} AS v
      FROM ${ctx.tables.minutes}
      WHERE ${tenantIs(tenantId)} AND ${nameIs} AND minute >= toDateTime(${startS}, 'UTC') AND minute < toDateTime(${endS}, 'UTC')
      GROUP BY b`;
    return {
      statement: sql`SELECT '' AS g, groupArray(b) AS bs, groupArray(v) AS vs FROM (${inner})`,
      rollup: true,
    };
  }
  const value =
    aggregation === "count"
      ? sql`toFloat64(count())`
      : aggregation === "unique_users"
        ? sql`toFloat64(uniqExactIf(actor, actor != ''))`
        : sql`toFloat64(sum(${numProp(revenue ? "total.amount_minor" : (q.sumProperty ?? ""))}))`;
  const group = groupBy ? strProp(groupBy) : sql`''`;
  // A stored copy of an event changes counts and sums but not distinct actors.
  const dedupe = aggregation === "unique_users" ? sql`` : sql`LIMIT 1 BY event_id`;
  const events = sql`SELECT event_id, time_ms, actor, str_keys, str_values, num_keys, num_values
    FROM ${ctx.tables.events}
    WHERE ${tenantIs(tenantId)} AND ${nameIs} AND ${timeIn(q.startMs, q.endMs)} AND ${filtersCondition(q.filters)}
    ${dedupe}`;
  const perBucket = sql`SELECT ${group} AS g, intDiv(time_ms, ${width}) * ${width} AS b, ${value} AS v
    FROM (${events}) GROUP BY g, b`;
  return {
    statement: sql`SELECT g, groupArray(b) AS bs, groupArray(v) AS vs, sum(v) AS total FROM (${perBucket})
      GROUP BY g ORDER BY total DESC, g ASC LIMIT ${MAX_GROUPS}`,
    rollup: false,
  };
}

/** A store over one deployment's database on the given engine. */
export function createAnalyticsStore(options: AnalyticsStoreOptions): AnalyticsStore {
  const ctx: StoreContext = { ch: options.clickhouse, tables: tablesOf(options.database) };
  const { ch, tables } = ctx;
  // Inserts run one at a time so the duplicate check and the write cannot interleave.
  let insertChain: Promise<unknown> = Promise.resolve();

  async function existingIds(tenantId: string, ids: readonly string[]): Promise<Set<string>> {
    const found = new Set<string>();
    for (let i = 0; i < ids.length; i += ID_CHUNK) {
      const chunk = ids.slice(i, i + ID_CHUNK);
      // One string literal of hex-encoded ids, split server-side: a long IN (…) list of literals
      // costs ClickHouse (18.16 above all) far more to parse than one string.
      const packed = chunk.map((id) => Buffer.from(id, "utf8").toString("hex")).join(",");
      const rows = await ch.query<{ event_id: string }>(
        sql`SELECT event_id FROM ${tables.eventIds} WHERE ${tenantIs(tenantId)}
          AND event_id IN (SELECT unhex(arrayJoin(splitByChar(',', ${packed}))))`,
      );
      for (const r of rows) found.add(r.event_id);
    }
    return found;
  }

  async function insertNow(blocks: readonly RowBlock[]): Promise<number> {
    const byTenant = new Map<string, RowBlock[]>();
    for (const block of blocks) {
      checkBlock(block);
      const list = byTenant.get(block.tenantId) ?? [];
      byTenant.set(block.tenantId, list);
      list.push(block);
    }
    const parts: Uint8Array[] = [];
    let rows = 0;
    for (const [tenantId, list] of byTenant) {
      // Ids already stored count as seen: their lines are dropped, as are later copies in the batch.
      const seen = await existingIds(tenantId, [...new Set(list.flatMap((b) => b.ids))]);
      for (const block of list) {
        const fresh = freshLines(block, seen);
        if (fresh.rows > 0) parts.push(fresh.body);
        rows += fresh.rows;
      }
    }
    if (rows > 0) await ch.insertJSONEachRow(tables.events, Buffer.concat(parts));
    return rows;
  }

  function insertBlocks(blocks: readonly RowBlock[]): Promise<number> {
    if (blocks.length === 0) return Promise.resolve(0);
    const run = insertChain.then(() => guard(() => insertNow(blocks)));
    insertChain = run.catch(() => undefined);
    return run;
  }

  return {
    async migrate() {
      await guard(async () => {
        for (const statement of schemaStatements(options.database)) await ch.exec(statement);
      });
    },
    insertEvents(events) {
      let blocks: RowBlock[];
      try {
        blocks = toRowBlocks(events);
      } catch (error) {
        return Promise.reject(error);
      }
      return insertBlocks(blocks);
    },
    insertBlocks,
    async queryMetrics(tenantId, q) {
      checkMetricsQuery(q);
      const { statement, rollup } = metricsSql(ctx, tenantId, q);
      const rows = await guard(() => ch.query<{ g: string; bs: unknown[]; vs: unknown[] }>(statement));
      const series: SeriesResult[] = rows
        .filter((r) => r.bs.length > 0)
        .map((r) => ({ group: r.g, points: fillPoints(q, r.bs, r.vs) }));
      const grouped = "metric" in q.target ? q.target.metric === "order_revenue" : Boolean(q.groupBy);
      if (series.length === 0 && !grouped) series.push({ group: "", points: fillPoints(q, [], []) });
      return { series, source: rollup ? "rollup" : "raw" };
    },
    async liveCounts(tenantId, names, startMs, endMs) {
      checkRange(startMs, endMs, 3_600_000);
      if (names.length > 20) throw invalid("too many event names");
      for (const n of names) checkName(n);
      const nameIn = names.length === 0 ? sql`1` : sql`name IN ${names}`;
      const rows = await guard(() =>
        ch.query<{ name: string; c: unknown }>(sql`SELECT name, count() AS c FROM (
          SELECT name, event_id FROM ${tables.events}
          WHERE ${tenantIs(tenantId)} AND ${nameIn} AND ${timeIn(startMs, endMs)} LIMIT 1 BY event_id
        ) GROUP BY name`),
      );
      return new Map(rows.map((r) => [r.name, toNumber(r.c)]));
    },
    funnel: (tenantId, q) => funnel(ctx, tenantId, q),
    retention: (tenantId, q) => retention(ctx, tenantId, q),
    activityRows: (tenantId, startMs, endMs) => activityRows(ctx, tenantId, startMs, endMs),
    orderRows: (tenantId, startMs, endMs) => orderRows(ctx, tenantId, startMs, endMs),
    billingEvents: (tenantId, endMs) => billingEvents(ctx, tenantId, endMs),
    async dropDatabase() {
      await guard(() => ch.exec(sql`DROP DATABASE IF EXISTS ${tables.database}`));
    },
  };
}
