import { ClickHouseLogLevel, createClient } from "@clickhouse/client";
import { createHttpSelect } from "./clickhouse-http.ts";
import type { Sql } from "./sql.ts";

/** The three things the store needs from ClickHouse, whichever engine runs it. */
export interface ClickHouse {
  /** Which engine: a server over HTTP, or chDB in this process. */
  readonly kind: "server" | "chdb";
  /** Runs a statement that returns no rows (DDL). */
  exec(statement: Sql): Promise<void>;
  /** Inserts JSONEachRow text, one row per line, into `table` (a qualified name built with ident). */
  insertJSONEachRow(table: Sql, rows: Uint8Array): Promise<void>;
  /** Runs a SELECT and answers its rows as parsed JSON objects. */
  query<T = Record<string, unknown>>(statement: Sql): Promise<T[]>;
  /** Releases the connection or session. */
  close(): Promise<void>;
}

// Filter lists can be long (20 filters × 100 values × 1 KiB); the default limit is 256 KiB.
const MAX_QUERY_SIZE = 16 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 60_000;

/** A ClickHouse server over HTTP: @clickhouse/client for DDL, createHttpSelect for reads and inserts; 18.16 and current releases. */
export function createServerClickHouse(url: string): ClickHouse {
  const reads = createHttpSelect(url, { max_query_size: String(MAX_QUERY_SIZE) }, REQUEST_TIMEOUT_MS);
  const client = createClient({
    url,
    clickhouse_settings: { max_query_size: String(MAX_QUERY_SIZE) },
    request_timeout: REQUEST_TIMEOUT_MS,
    // Its own logger writes to the console; failures reach the service's logs as error causes.
    log: { level: ClickHouseLogLevel.OFF },
  });
  return {
    kind: "server",
    async exec(statement) {
      await client.command({ query: statement.text });
    },
    async insertJSONEachRow(table, rows) {
      if (rows.byteLength === 0) return;
      await reads.insert(table.text, rows);
    },
    async query<T>(statement: Sql) {
      return parseJSONEachRow<T>(await reads.select(statement.text));
    },
    async close() {
      reads.close();
      await client.close();
    },
  };
}

// The subset of chdb's API used here; chdb is an optional dependency loaded at run time.
interface ChdbResult {
  text(): string;
}
interface ChdbSession {
  query(query: string, format?: string): string;
  queryAsync(query: string, opts?: { format?: string }): Promise<ChdbResult>;
  insert(params: { table: string; values: Buffer; format: "JSONEachRow" }): Promise<unknown>;
  close(): void;
}
interface ChdbModule {
  Session: new (path: string) => ChdbSession;
  drainPending?: () => Promise<void>;
}

function parseJSONEachRow<T>(text: string): T[] {
  const rows: T[] = [];
  for (const line of text.split("\n")) if (line.trim() !== "") rows.push(JSON.parse(line) as T);
  return rows;
}

/** chDB (current ClickHouse in-process) keeping its data in `dir`; needs the optional `chdb` package. */
export async function createChdbClickHouse(dir: string): Promise<ClickHouse> {
  const specifier = "chdb";
  let mod: ChdbModule;
  try {
    mod = (await import(specifier)) as ChdbModule;
  } catch (cause) {
    throw new Error(
      "CLICKHOUSE_URL is unset or chdb:<dir>, but the optional package `chdb` is not installed: install it or set CLICKHOUSE_URL=http://…",
      { cause },
    );
  }
  const session = new mod.Session(dir);
  // SET applies to the session, so every later query may be as long as on the server.
  session.query(`SET max_query_size = ${MAX_QUERY_SIZE}`);
  return {
    kind: "chdb",
    async exec(statement) {
      await session.queryAsync(statement.text, { format: "TabSeparated" });
    },
    async insertJSONEachRow(table, rows) {
      if (rows.byteLength === 0) return;
      await session.insert({ table: table.text, values: Buffer.from(rows), format: "JSONEachRow" });
    },
    async query<T>(statement: Sql) {
      const result = await session.queryAsync(statement.text, { format: "JSONEachRow" });
      return parseJSONEachRow<T>(result.text());
    },
    async close() {
      session.close();
      await mod.drainPending?.();
    },
  };
}

/** Opens the engine CLICKHOUSE_URL names: http(s)://… a server, `chdb:<dir>` (or unset: defaultDir) chDB. */
export async function openClickHouse(url: string | undefined, defaultDir: string): Promise<ClickHouse> {
  if (url === undefined || url === "") return createChdbClickHouse(defaultDir);
  if (url.startsWith("chdb:")) return createChdbClickHouse(url.slice("chdb:".length) || defaultDir);
  if (/^https?:\/\//.test(url)) return createServerClickHouse(url);
  throw new Error("CLICKHOUSE_URL must be http(s)://host:port or chdb:<dir>");
}
