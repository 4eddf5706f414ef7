// `npm start` from an empty data directory: the whole mesh comes up with its embedded stores, a
// signed-up user's order goes through the saga end to end over the gateway, and after a restart
// the data is still there. Uses the launcher's fixed ports (8001-8004, 8080, 9001-9080, 14222, 15432-15434).
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { eventually } from "@trellis/kit/testing.js";

const root = join(import.meta.dirname, "..");
const gateway = "http://127.0.0.1:8080";
const dataDir = mkdtempSync(join(tmpdir(), "trellis-start-"));

/** Resolves once the launcher says it is up; rejects at once if it exits first. */
async function upOrExit(launcher: { child: ChildProcess; output: () => string }, what: string) {
  await eventually(
    () => {
      if (launcher.child.exitCode !== null)
        throw new Error(`the launcher exited:\n${launcher.output().slice(-3000)}`);
      return launcher.output().includes("Trellis is up.");
    },
    { timeoutMs: 240_000, intervalMs: 500, what },
  ).catch((error: Error) => {
    throw new Error(
      `${error.message}: ${error.cause instanceof Error ? error.cause.message : ""}\n${launcher.output().slice(-3000)}`,
    );
  });
}

function start(): { child: ChildProcess; output: () => string } {
  let output = "";
  const env: Record<string, string | undefined> = {
    ...process.env,
    TRELLIS_DATA_DIR: dataDir,
    LOG_LEVEL: "warn",
  };
  for (const name of [
    "NATS_URL",
    "AUTH_DATABASE_URL",
    "BILLING_DATABASE_URL",
    "CORE_DATABASE_URL",
    "CLICKHOUSE_URL",
  ]) {
    delete env[name];
  }
  // Its own process group, so stop() can signal the whole group as a terminal's Ctrl-C does.
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
    cwd: root,
    env,
    detached: true,
  });
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  return { child, output: () => output };
}

/** Ctrl-C in a terminal: SIGINT to the launcher's whole process group (every service too). */
async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  return new Promise((resolve) => {
    child.once("exit", (code) => resolve(code));
    process.kill(-(child.pid as number), "SIGINT");
  });
}

async function call(path: string, body: unknown, token?: string) {
  const res = await fetch(gateway + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, unknown>;
  assert.equal(res.status, 200, `${path}: ${JSON.stringify(json)}`);
  return json as Record<string, unknown>;
}

describe("npm start", { timeout: 600_000 }, () => {
  let running: ChildProcess | undefined;
  after(async () => {
    if (running) await stop(running);
    rmSync(dataDir, { recursive: true, force: true });
  });

  let token = "";
  let orderId = "";
  const email = `ada-${Date.now()}@example.com`;
  const password = "correct horse battery staple";

  it("comes up from an empty data directory and serves an order end to end", async () => {
    const first = start();
    running = first.child;
    await upOrExit(first, "the launcher's ready line");
    const signUp = await call("/trellis.auth.v1.AuthService/SignUp", { email, password, tenantName: "Acme" });
    token = (signUp.tokens as { accessToken: string }).accessToken;
    const product = await call(
      "/trellis.core.v1.CoreService/CreateProduct",
      { sku: "MUG-1", name: "Mug", active: true, price: { amountMinor: "1200", currency: "USD" } },
      token,
    );
    const productId = (product.product as { productId: string }).productId;
    await call(
      "/trellis.core.v1.CoreService/AdjustStock",
      { productId, delta: 5, reason: "initial", idempotencyKey: "k1" },
      token,
    );
    const order = await call(
      "/trellis.core.v1.CoreService/CreateOrder",
      { items: [{ productId, quantity: 2 }], paymentMethod: "pm_card_visa", idempotencyKey: "o1" },
      token,
    );
    orderId = (order.order as { orderId: string }).orderId;
    const status = await eventually(
      async () => {
        const res = await fetch(`${gateway}/v1/orders/${orderId}`, {
          headers: { authorization: `Bearer ${token}` },
        });
        const body = (await res.json()) as { order?: { status?: string } };
        return body.order?.status === "ORDER_STATUS_CONFIRMED" && body.order.status;
      },
      { timeoutMs: 30_000, what: "the order to be confirmed" },
    );
    assert.equal(status, "ORDER_STATUS_CONFIRMED");
    assert.equal(
      await stop(first.child),
      0,
      `Ctrl-C stops everything cleanly:\n${first.output().slice(-3000)}`,
    );
    running = undefined;
    // Each service drained on one SIGTERM from the launcher, not exited on a second signal.
    assert.doesNotMatch(first.output(), /second signal|did not shut down cleanly/);
  });

  it("keeps the data across a restart", async () => {
    assert.ok(orderId, "the first test placed an order");
    const second = start();
    running = second.child;
    await upOrExit(second, "the launcher's ready line after a restart");
    const login = await call("/trellis.auth.v1.AuthService/Login", { email, password });
    const fresh = (login.tokens as { accessToken: string }).accessToken;
    const res = await fetch(`${gateway}/v1/orders/${orderId}`, {
      headers: { authorization: `Bearer ${fresh}` },
    });
    const body = (await res.json()) as { order?: { status?: string; total?: { amountMinor?: string } } };
    assert.equal(body.order?.status, "ORDER_STATUS_CONFIRMED");
    assert.equal(body.order?.total?.amountMinor, "2400");
  });
});
