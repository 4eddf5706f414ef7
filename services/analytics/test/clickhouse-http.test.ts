import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, describe, test } from "node:test";
import { ClickHouseHttpError, createHttpSelect, ReusedSocketReset } from "../src/clickhouse-http.ts";

const SERVER_URL = process.env.TEST_CLICKHOUSE_URL ?? "http://127.0.0.1:8123";

/** Keeps the thread busy for ms: sockets' events (a server's FIN or RST) stay unread meanwhile. */
function blockThread(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
}

describe("ClickHouse HTTP read path", () => {
  const opened: { close(): void }[] = [];
  const open = (url: string, timeoutMs = 10_000) => {
    const s = createHttpSelect(url, { max_query_size: "1048576" }, timeoutMs);
    opened.push(s);
    return s;
  };
  after(() => {
    for (const s of opened) s.close();
  });

  test("answers JSONEachRow rows, with the URL's user and database", async () => {
    const url = new URL(SERVER_URL);
    url.username = "default";
    url.pathname = "/system";
    const text = await open(url.toString()).select("SELECT currentDatabase() AS db, 'x''y' AS s");
    assert.deepEqual(JSON.parse(text.trim()), { db: "system", s: "x'y" });
  });

  test("a failing statement or an unknown database rejects with the server's status", async () => {
    await assert.rejects(
      open(SERVER_URL).select("SELECT no_such_column FROM system.one"),
      (e: unknown) => e instanceof ClickHouseHttpError && e.status >= 400,
    );
    const url = new URL(SERVER_URL);
    url.pathname = "/no_such_database_here";
    await assert.rejects(
      open(url.toString()).select("SELECT 1"),
      (e: unknown) => e instanceof ClickHouseHttpError && e.status >= 400,
    );
  });

  test("kept-alive sockets the server closed while the event loop was busy: a SELECT is sent again, an insert rejects as a reset", async () => {
    // ClickHouse closes a connection idle for keep_alive_timeout (3 s here; the test reads it).
    const s = open(SERVER_URL);
    const rows = await s
      .select("SELECT toUInt32(value) AS v FROM system.server_settings WHERE name = 'keep_alive_timeout'")
      .catch(() => "");
    const idleSeconds = Number(rows ? JSON.parse(rows).v : 3) || 3;
    // Blocking the thread past the server's idle timeout leaves its FIN unread: the next request
    // reuses the dead socket, as a busy service would.
    const blockPastIdle = () => blockThread(idleSeconds * 1000 + 400);
    // Several calls at once leave several idle sockets, all closed by the server alike: the retry
    // must not land on another of them.
    const parallel = () => Promise.all([1, 2, 3].map((n) => s.select(`SELECT ${n} AS v, sleep(0.05)`)));
    await parallel();
    blockPastIdle();
    assert.equal(JSON.parse(await s.select("SELECT 41 + 1 AS v")).v, 42);
    await parallel();
    blockPastIdle();
    assert.deepEqual(
      (await parallel()).map((text) => (JSON.parse(text) as { v: number }).v),
      [1, 2, 3],
    );
    await s.select("SELECT 1");
    blockPastIdle();
    await assert.rejects(
      s.insert("system.one", new TextEncoder().encode('{"dummy":1}\n')),
      (e: unknown) => e instanceof ReusedSocketReset && e.code === "ECONNRESET",
    );
  });

  // A unit test with a stand-in HTTP server (not ClickHouse): it resets each connection right after
  // answering, so the race the real-server test above leaves to timing happens every time.
  test("a SELECT retried after a reset never lands on another dead pooled socket", async () => {
    let answered = 0;
    const server = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        answered++;
        res.writeHead(200, { "content-type": "text/plain", "keep-alive": "timeout=30" });
        res.end(`{"v":${answered}}\n`);
        res.on("finish", () => setTimeout(() => req.socket.resetAndDestroy(), 20));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const s = open(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
      // Three pooled sockets, all reset while the thread is busy, before their errors are read.
      await Promise.all([1, 2, 3].map(() => s.select("SELECT 1")));
      blockThread(300);
      assert.equal((JSON.parse(await s.select("SELECT 2")) as { v: number }).v, 4);
    } finally {
      server.close();
    }
  });

  test("a query on a reused socket may take longer than the socket was kept idle for", async () => {
    // The agent keeps an idle socket for the server's Keep-Alive hint less a second (2 s here); a
    // query answered only at its end (wait_end_of_query) is silent for as long as it runs.
    const s = open(SERVER_URL);
    await s.select("SELECT 1");
    const text = await s.select("SELECT sleep(2.5) AS slept, 7 AS v");
    assert.equal((JSON.parse(text) as { v: number }).v, 7);
    // The request's own timeout still holds on a reused socket.
    const short = open(SERVER_URL, 1000);
    await short.select("SELECT 1");
    await assert.rejects(
      short.select("SELECT sleep(2.5)"),
      (e: unknown) => (e as { code?: string }).code === "ETIMEDOUT",
    );
  });

  test("an unreachable server rejects with the socket's error code", async () => {
    await assert.rejects(open("http://127.0.0.1:1").select("SELECT 1"), (e: unknown) => {
      return (e as { code?: string }).code === "ECONNREFUSED";
    });
  });
});
