import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { createDb, type Db } from "../src/db.js";
import { migrate } from "../src/migrate.js";
import { createTestDatabase, type TestDatabase } from "../src/testing.js";

const ADMIN_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

async function migrationsDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "trellis-migrations-"));
  for (const [name, sql] of Object.entries(files)) await writeFile(join(dir, name), sql);
  return dir;
}

async function tableExists(sql: Db, name: string): Promise<boolean> {
  const [row] = await sql<{ exists: boolean }[]>`select to_regclass(${name}) is not null as exists`;
  return row?.exists ?? false;
}

describe("migrate", () => {
  const dbs: TestDatabase[] = [];
  const pools: Db[] = [];
  const dirs: string[] = [];
  // Each test gets its own database so the kit's migrations race too.
  const database = async () => {
    const db = await createTestDatabase("trellis_migrate", ADMIN_URL);
    dbs.push(db);
    return db;
  };
  const pool = (db: TestDatabase) => {
    const sql = createDb(db.url, { max: 2, service: "migrate-test" });
    pools.push(sql);
    return sql;
  };
  const dir = async (files: Record<string, string>) => {
    const d = await migrationsDir(files);
    dirs.push(d);
    return d;
  };

  after(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await Promise.all(dbs.map((db) => db.drop()));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  test("applies kit then service migrations once; a second run is a no-op", async () => {
    const sql = pool(await database());
    const d = await dir({
      "0001_widgets.sql": "create table widgets (id int primary key);",
      "0002_gadgets.sql": "create table gadgets (id int primary key);\ninsert into gadgets values (1);",
      "notes.txt": "not a migration",
    });
    const first = await migrate(sql, { dir: d, service: "svc_once" });
    assert.deepEqual(
      first.map((m) => `${m.service}/${m.version}`),
      ["kit/1", "kit/2", "svc_once/1", "svc_once/2"],
    );
    for (const table of ["outbox", "inbox", "widgets", "gadgets"])
      assert.ok(await tableExists(sql, table), table);

    const second = await migrate(sql, { dir: d, service: "svc_once" });
    assert.deepEqual(second, []);
    const [count] = await sql<{ n: number }[]>`select count(*)::int as n from gadgets`;
    assert.equal(count?.n, 1);
    const rows =
      await sql`select service, version, name from schema_migrations where service = 'svc_once' order by version`;
    assert.deepEqual(
      rows.map((r) => [r.service, r.version, r.name]),
      [
        ["svc_once", 1, "widgets"],
        ["svc_once", 2, "gadgets"],
      ],
    );
  });

  test("concurrent migrate() from two connections applies each file once", async () => {
    // Neither statement tolerates a second run, so without the lock one caller would fail.
    const d = await dir({
      "0001_orders.sql": "create table orders (id int primary key);\nselect pg_sleep(0.2);",
      "0002_counter.sql": "create table counter (n int);\ninsert into counter values (1);",
    });
    const db = await database();
    const [a, b] = await Promise.all([
      migrate(pool(db), { dir: d, service: "svc_race" }),
      migrate(pool(db), { dir: d, service: "svc_race" }),
    ]);
    const applied = [...a, ...b].map((m) => `${m.service}/${m.version}`).sort();
    assert.deepEqual(applied, ["kit/1", "kit/2", "svc_race/1", "svc_race/2"]);
    const sql = pool(db);
    const [count] = await sql<{ n: number }[]>`select count(*)::int as n from counter`;
    assert.equal(count?.n, 1);
  });

  test("a changed applied migration is an error naming the file", async () => {
    const sql = pool(await database());
    const d = await dir({ "0001_things.sql": "create table things (id int);" });
    await migrate(sql, { dir: d, service: "svc_changed" });
    await writeFile(join(d, "0001_things.sql"), "create table things (id bigint);");
    await assert.rejects(migrate(sql, { dir: d, service: "svc_changed" }), /0001_things\.sql/);
  });

  test("a failing migration leaves nothing behind and is not recorded", async () => {
    const sql = pool(await database());
    const d = await dir({
      "0001_half.sql": "create table half_done (id int);\nselect no_such_function();",
    });
    await assert.rejects(migrate(sql, { dir: d, service: "svc_failing" }));
    assert.equal(await tableExists(sql, "half_done"), false);
    const rows = await sql`select 1 from schema_migrations where service = 'svc_failing'`;
    assert.equal(rows.length, 0);
  });
});
