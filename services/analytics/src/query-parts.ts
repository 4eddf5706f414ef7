import { Code, ConnectError } from "@connectrpc/connect";
import type { ClickHouse } from "./clickhouse.ts";
import { checkFilter, checkKey, checkText, type PropertyFilter } from "./model.ts";
import type { Tables } from "./schema.ts";
import { join, type Sql, sql } from "./sql.ts";

/** What the store's query modules share: the engine and the deployment's tables. */
export interface StoreContext {
  readonly ch: ClickHouse;
  readonly tables: Tables;
}

/** The tenant condition every query starts with; the tenant is an argument, never request text. */
export function tenantIs(tenantId: string): Sql {
  checkText(tenantId, 128, "tenant", 1);
  return sql`tenant_id = ${tenantId}`;
}

/** Events with startMs <= time_ms < endMs; the seconds column lets the primary key prune. */
export function timeIn(startMs: number, endMs: number): Sql {
  const first = Math.floor(startMs / 1000);
  const last = Math.floor((endMs - 1) / 1000);
  return sql`time >= toDateTime(${first}, 'UTC') AND time <= toDateTime(${last}, 'UTC') AND time_ms >= ${startMs} AND time_ms < ${endMs}`;
}

/** A text property's value ('' when absent). */
export function strProp(key: string): Sql {
  checkKey(key);
  return sql`str_values[indexOf(str_keys, ${key})]`;
}

/** A numeric property's value (0 when absent, so sums skip it). */
export function numProp(key: string): Sql {
  checkKey(key);
  return sql`num_values[indexOf(num_keys, ${key})]`;
}

/** The SQL condition of one filter, with the contract's semantics for absent properties. */
export function filterCondition(f: PropertyFilter): Sql {
  checkFilter(f);
  const has = sql`has(str_keys, ${f.property})`;
  const value = strProp(f.property);
  const first = f.values[0] ?? "";
  switch (f.op) {
    case "eq":
      return sql`(${has} AND ${value} = ${first})`;
    case "neq":
      return sql`NOT (${has} AND ${value} = ${first})`;
    case "in":
      return sql`(${has} AND ${value} IN ${f.values})`;
    case "not_in":
      return sql`NOT (${has} AND ${value} IN ${f.values})`;
    case "contains":
      return sql`(${has} AND position(${value}, ${first}) > 0)`;
    case "not_contains":
      return sql`NOT (${has} AND position(${value}, ${first}) > 0)`;
    case "exists":
      return has;
    case "not_exists":
      return sql`NOT ${has}`;
  }
}

/** All filters ANDed, or `1` when there are none. */
export function filtersCondition(filters: readonly PropertyFilter[] | undefined): Sql {
  if (!filters || filters.length === 0) return sql`1`;
  if (filters.length > 20) throw new ConnectError("too many filters", Code.InvalidArgument);
  return join(filters.map(filterCondition), " AND ");
}

/** Runs fn, turning engine failures into Unavailable/Internal without exposing their text. */
export async function guard<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof ConnectError) throw error;
    const code = (error as { code?: unknown }).code;
    const down = code === "ECONNREFUSED" || code === "ECONNRESET" || code === "ETIMEDOUT" || code === "EPIPE";
    throw new ConnectError(
      down ? "analytics store unavailable" : "analytics store failed",
      down ? Code.Unavailable : Code.Internal,
      undefined,
      undefined,
      error,
    );
  }
}

/** A JSON number or 64-bit integer string from ClickHouse as a JS number. */
export function toNumber(value: unknown): number {
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : 0;
}
