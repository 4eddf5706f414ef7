import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";

/** A lowercase name unique to this call, safe as a database, stream, subject token or consumer name. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString("hex")}`;
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolve(address.port);
        else reject(new Error("no port"));
      });
    });
  });
}

/** A freshly created PostgreSQL database and its URL; drop() removes it. */
export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  drop(): Promise<void>;
}

/** Creates a uniquely named database on the server at adminUrl (the test server by default). */
export async function createTestDatabase(
  prefix = "trellis_test",
  adminUrl = "postgres://postgres@127.0.0.1:5432/postgres",
): Promise<TestDatabase> {
  const name = uniqueName(prefix);
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    async drop() {
      const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`drop database if exists "${name}" with (force)`);
      } finally {
        await sql.end();
      }
    },
  };
}

/** A nats-server child process with JetStream that a test may stop and start again. */
export interface TestNatsServer {
  readonly port: number;
  readonly url: string;
  /** The running server's process id (undefined while stopped). */
  readonly pid: number | undefined;
  /** Kills the server (SIGKILL) and waits for it to exit; its JetStream store stays on disk. */
  stop(): Promise<void>;
  /** Starts it again on the same port and store. */
  start(): Promise<void>;
  /** Stops it and deletes its store. */
  dispose(): Promise<void>;
}

/** Spawns `nats-server -js` on a free port with a private store directory. */
export async function startNatsServer(binary = "nats-server"): Promise<TestNatsServer> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "trellis-nats-"));
  let child: ChildProcess | undefined;
  const start = async () => {
    const proc = spawn(binary, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    child = proc;
    await new Promise<void>((resolve, reject) => {
      let log = "";
      const onData = (chunk: Buffer) => {
        log += chunk.toString();
        if (log.includes("Server is ready")) {
          proc.stderr?.off("data", onData);
          proc.stderr?.resume();
          resolve();
        }
      };
      proc.stderr?.on("data", onData);
      proc.once("error", reject);
      proc.once("exit", (code) => reject(new Error(`nats-server exited with ${code}: ${log}`)));
    });
  };
  const stop = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      proc.kill("SIGKILL");
    });
  };
  await start();
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    get pid() {
      return child?.exitCode === null ? child.pid : undefined;
    },
    stop,
    start,
    async dispose() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Polls check until it returns a truthy value or the deadline passes, then returns it or throws. */
export async function eventually<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 10_000, intervalMs = 25, what = "condition" } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`, { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
