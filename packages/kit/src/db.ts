import postgres from "postgres";

/** Options for {@link createDb}; every one has a production-sane default. */
export interface DbOptions {
  /** Pool size (default 10; use 1 against PGlite, which serves one connection at a time). */
  readonly max?: number;
  /** Service name, sent as the connection's application_name so pg_stat_activity shows who is who. */
  readonly service?: string;
  /** Seconds an idle connection is kept before it is closed (default 30). */
  readonly idleTimeout?: number;
  /** Seconds to wait for a connection to be established (default 10). */
  readonly connectTimeout?: number;
}

/**
 * The kit's PostgreSQL handle. `int8`/`bigint` columns (and `count(*)`) come back as JS `bigint`,
 * matching protobuf-es's `int64` fields, so money in minor units never passes through a float.
 */
export type Db = postgres.Sql<{ bigint: bigint }>;

/** A postgres.js pool with the kit's defaults: notices silenced, int8 parsed as bigint. */
export function createDb(url: string, options: DbOptions = {}): Db {
  return postgres(url, {
    max: options.max ?? 10,
    idle_timeout: options.idleTimeout ?? 30,
    connect_timeout: options.connectTimeout ?? 10,
    onnotice: () => {},
    types: { bigint: postgres.BigInt },
    connection: options.service ? { application_name: options.service } : {},
  });
}

/** A health check that resolves when `select 1` answers within timeoutMs and rejects otherwise. */
export function postgresCheck(sql: Db, timeoutMs = 2000): () => Promise<void> {
  return async () => {
    const query = sql`select 1 as ok`;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        query.cancel();
        reject(new Error(`postgres did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    try {
      await Promise.race([query, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
}
