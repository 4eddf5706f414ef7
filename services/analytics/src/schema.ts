import { ident, type Sql, sql } from "./sql.ts";

/** Qualified names of the store's tables in one deployment's database. */
export interface Tables {
  readonly database: Sql;
  /** Every event, client and domain; duplicates by event id may exist until merges (see store.ts). */
  readonly events: Sql;
  /** (tenant_id, event_id) of every inserted event, sorted for the insert path's duplicate check. */
  readonly eventIds: Sql;
  /**
   * Per-minute rollup per tenant and event name: event count and distinct actors. "No actor" is
   * stored as '' in the set and flagged in `actorless`, so distinct actors over any span are
   * uniqExactMerge(actors) - maxMerge(actorless) (a -If state's type differs between versions).
   */
  readonly minutes: Sql;
}

/** The table names of `database` (a plain identifier from config, never request text). */
export function tablesOf(database: string): Tables {
  const db = ident(database);
  return {
    database: db,
    events: sql`${db}.events`,
    eventIds: sql`${db}.event_ids`,
    minutes: sql`${db}.events_minute`,
  };
}

/**
 * DDL for one deployment, idempotent, accepted by ClickHouse 18.16 and current releases alike:
 * no DateTime64 (18.16 lacks it: DateTime plus an Int64 millisecond column), no Map type
 * (parallel key/value arrays), MergeTree engines in the PARTITION BY / ORDER BY syntax.
 */
export function schemaStatements(database: string): Sql[] {
  const t = tablesOf(database);
  const db = t.database;
  return [
    sql`CREATE DATABASE IF NOT EXISTS ${db}`,
    sql`CREATE TABLE IF NOT EXISTS ${t.events} (
      tenant_id String,
      event_id String,
      name String,
      source Enum8('client' = 1, 'domain' = 2),
      user_id String,
      anonymous_id String,
      actor String,
      time DateTime('UTC'),
      time_ms Int64,
      str_keys Array(String),
      str_values Array(String),
      num_keys Array(String),
      num_values Array(Float64),
      payload String,
      received_at DateTime('UTC')
    ) ENGINE = ReplacingMergeTree()
    PARTITION BY toYYYYMM(time)
    ORDER BY (tenant_id, name, time, event_id)`,
    sql`CREATE TABLE IF NOT EXISTS ${t.eventIds} (
      tenant_id String,
      event_id String
    ) ENGINE = ReplacingMergeTree()
    ORDER BY (tenant_id, event_id)`,
    sql`CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.event_ids_mv TO ${t.eventIds}
    AS SELECT tenant_id, event_id FROM ${t.events}`,
    sql`CREATE TABLE IF NOT EXISTS ${t.minutes} (
      tenant_id String,
      name String,
      minute DateTime('UTC'),
      events AggregateFunction(count),
      actors AggregateFunction(uniqExact, String),
      actorless AggregateFunction(max, UInt8)
    ) ENGINE = AggregatingMergeTree()
    PARTITION BY toYYYYMM(minute)
    ORDER BY (tenant_id, name, minute)`,
    sql`CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.events_minute_mv TO ${t.minutes}
    AS SELECT tenant_id, name, toDateTime(intDiv(toUInt32(time), 60) * 60, 'UTC') AS minute,
      countState() AS events, uniqExactState(actor) AS actors,
      maxState(toUInt8(actor = '')) AS actorless
    FROM ${t.events} GROUP BY tenant_id, name, minute`,
  ];
}
