import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type postgres from "postgres";
import type { Db } from "./db.js";

/** Directory of the kit's own migrations (outbox, inbox), applied under service "kit". */
export const KIT_MIGRATIONS_DIR = fileURLToPath(new URL("../migrations", import.meta.url));

/** Options for {@link migrate}. */
export interface MigrateOptions {
  /** Directory holding `NNNN_name.sql` files. */
  readonly dir: string;
  /** Service the migrations belong to; also the advisory lock key. */
  readonly service: string;
  readonly logger?: Pick<Logger, "info">;
  /** Apply the kit's own migrations first (default true). */
  readonly kit?: boolean;
}

/** One migration file on disk. */
export interface MigrationFile {
  readonly version: number;
  readonly name: string;
  readonly file: string;
  readonly sql: string;
  readonly checksum: string;
}

/** A migration that was applied by this call. */
export interface AppliedMigration {
  readonly service: string;
  readonly version: number;
  readonly name: string;
}

const FILE_PATTERN = /^(\d+)_([A-Za-z0-9_.-]+)\.sql$/;

/** Reads `NNNN_name.sql` files in version order; rejects duplicate versions. */
export async function readMigrations(dir: string): Promise<MigrationFile[]> {
  const files: MigrationFile[] = [];
  for (const file of await readdir(dir)) {
    const match = FILE_PATTERN.exec(file);
    if (!match) continue;
    // Normalised line endings keep the checksum stable across checkouts with autocrlf.
    const sql = (await readFile(join(dir, file), "utf8")).replace(/\r\n/g, "\n");
    files.push({
      version: Number(match[1]),
      name: match[2] ?? "",
      file,
      sql,
      checksum: createHash("sha256").update(sql).digest("hex"),
    });
  }
  files.sort((a, b) => a.version - b.version);
  for (let i = 1; i < files.length; i++) {
    const [prev, cur] = [files[i - 1], files[i]];
    if (prev && cur && prev.version === cur.version) {
      throw new Error(`migrations ${prev.file} and ${cur.file} in ${dir} share version ${cur.version}`);
    }
  }
  return files;
}

/** A stable signed 64-bit advisory lock key for a name. */
export function advisoryKey(name: string): string {
  return createHash("sha256").update(name).digest().readBigInt64BE(0).toString();
}

/**
 * Applies pending migrations (the kit's first, then the service's), each in its own transaction,
 * under a per-service advisory lock so concurrent starts apply each file exactly once. Throws,
 * naming the file, when an applied migration's content has changed.
 */
export async function migrate(sql: Db, options: MigrateOptions): Promise<AppliedMigration[]> {
  const applied: AppliedMigration[] = [];
  if ((options.kit ?? true) && options.service !== "kit") {
    applied.push(...(await migrateOne(sql, KIT_MIGRATIONS_DIR, "kit", options.logger)));
  }
  applied.push(...(await migrateOne(sql, options.dir, options.service, options.logger)));
  return applied;
}

async function migrateOne(
  sql: Db,
  dir: string,
  service: string,
  logger?: Pick<Logger, "info">,
): Promise<AppliedMigration[]> {
  const files = await readMigrations(dir);
  // One reserved connection for lock, reads and transactions: session locks belong to a
  // connection, and a pool of one (PGlite) must not deadlock waiting for a second.
  const conn = await sql.reserve();
  const key = advisoryKey(`trellis.migrate:${service}`);
  try {
    await conn`select pg_advisory_lock(${key}::bigint)`;
    try {
      await ensureTable(conn);
      const done = new Map<number, { name: string; checksum: string }>();
      const rows = await conn<{ version: number; name: string; checksum: string }[]>`
        select version, name, checksum from schema_migrations where service = ${service}`;
      for (const row of rows) done.set(row.version, row);
      const applied: AppliedMigration[] = [];
      for (const m of files) {
        const prior = done.get(m.version);
        if (prior) {
          if (prior.checksum !== m.checksum) {
            throw new Error(
              `migration ${service}/${m.file} changed after it was applied (checksum ${prior.checksum.slice(0, 12)} → ${m.checksum.slice(0, 12)}); add a new migration instead`,
            );
          }
          continue;
        }
        await conn.unsafe("begin");
        try {
          await conn.unsafe(m.sql);
          await conn`insert into schema_migrations (service, version, name, checksum)
            values (${service}, ${m.version}, ${m.name}, ${m.checksum})`;
          await conn.unsafe("commit");
        } catch (error) {
          await conn.unsafe("rollback");
          throw new Error(`migration ${service}/${m.file} failed`, { cause: error });
        }
        logger?.info({ service, version: m.version, migration: m.name }, "migration applied");
        applied.push({ service, version: m.version, name: m.name });
      }
      return applied;
    } finally {
      await conn`select pg_advisory_unlock(${key}::bigint)`;
    }
  } finally {
    conn.release();
  }
}

async function ensureTable(conn: postgres.ReservedSql<{ bigint: bigint }>): Promise<void> {
  try {
    await conn.unsafe(`create table if not exists schema_migrations (
      service    text        not null,
      version    integer     not null,
      name       text        not null,
      checksum   text        not null,
      applied_at timestamptz not null default now(),
      primary key (service, version)
    )`);
  } catch (error) {
    // Two services migrating one database hold different locks and may race on the first
    // create; the loser sees a duplicate and the table exists either way.
    const code = (error as { code?: string }).code;
    if (code !== "42P07" && code !== "23505") throw error;
  }
}
