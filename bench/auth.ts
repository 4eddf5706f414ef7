// Auth benchmark (issue 3), each number a ratio against a bare baseline measured in this run:
// 1. token verification in the kit (jose, cached key) vs raw crypto.verify of the same token;
// 2. Login throughput of the real service vs a bare argon2id loop at the same parameters and
//    the same concurrency as the service's hash pool;
// 3. p99 of a token-verified RPC (ListRoles) while logins run flat out vs its idle p99.
// The service runs as a child process (node --import tsx services/auth/src/main.ts).
import { type ChildProcess, spawn } from "node:child_process";
import { createPublicKey, verify as cryptoVerify, randomBytes } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { hash as argon2Hash, verify as argon2Verify } from "@node-rs/argon2";
import {
  AuthService,
  GetJwksResponseSchema,
  LoginRequestSchema,
  LoginResponseSchema,
} from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { connectNats } from "@trellis/kit/nats.js";
import { createTestDatabase, eventually, freePort, uniqueName } from "@trellis/kit/testing.js";
import { createTokenVerifier } from "@trellis/kit/tokens.js";
import type { JSONWebKeySet } from "jose";
import { argon2Params, hashConcurrency } from "../services/auth/src/passwords.ts";
import { rawGrpcClient, writeResults } from "./lib-load.js";

const seconds = Number(process.env.BENCH_SECONDS ?? 4);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const verifyOps = Number(process.env.BENCH_VERIFY_OPS ?? 20_000);
const probeCalls = Number(process.env.BENCH_PROBE_CALLS ?? 1000);
const natsUrl = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";
const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const password = "correct horse battery staple";
const concurrency = hashConcurrency(0);
// Enough logins in flight that one always waits for the hash pool while others are in the database.
const loginClients = Math.max(16, concurrency * 8);

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
};
const median = (values: number[]) => quantile(values, 0.5);
const round = (n: number, digits = 3) => Math.round(n * 10 ** digits) / 10 ** digits;

async function startChild(env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "services/auth/src/main.ts"], {
    cwd: new URL("..", import.meta.url).pathname,
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
  child.once("exit", (code) => {
    if (code !== 0 && code !== null) console.error(`auth exited with ${code}`);
  });
  return child;
}

const db = await createTestDatabase("auth_bench", adminUrl);
const stream = uniqueName("AUTH_BENCH");
const port = await freePort();
const child = await startChild({
  DATABASE_URL: db.url,
  NATS_URL: natsUrl,
  HOST: "127.0.0.1",
  PORT: String(port),
  ADMIN_PORT: "0",
  LOG_LEVEL: "warn",
  AUTH_STREAM_NAME: stream,
  AUTH_SUBJECT_PREFIX: `b${randomBytes(4).toString("hex")}.auth`,
  LOGIN_MAX_FAILURES: "1000000",
});

try {
  const client = createClient(AuthService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
  await eventually(() => client.getJwks({}).then(() => true), { timeoutMs: 60_000, what: "auth to start" });
  const email = `bench-${randomBytes(4).toString("hex")}@example.com`;
  const signedUp = await client.signUp({ email, password, tenantName: "Bench" });
  const token = signedUp.tokens?.accessToken ?? "";
  const jwks = toJson(GetJwksResponseSchema, await client.getJwks({})) as unknown as JSONWebKeySet;

  // 1. Token verification.
  const verifier = createTokenVerifier({ jwks, issuer: "trellis-auth", audience: "trellis" });
  const [head = "", body = "", sig = ""] = token.split(".");
  const jwk = jwks.keys[0];
  if (!jwk) throw new Error("no key published");
  const publicKey = createPublicKey({ key: jwk as never, format: "jwk" });
  const signed = Buffer.from(`${head}.${body}`);
  const signature = Buffer.from(sig, "base64url");
  const raw = () => {
    const ok =
      jwk.alg === "ES256"
        ? cryptoVerify("sha256", signed, { key: publicKey, dsaEncoding: "ieee-p1363" }, signature)
        : cryptoVerify(null, signed, publicKey, signature);
    // A verifier must also read the claims; the baseline does no more than that.
    if (!ok || !JSON.parse(Buffer.from(body, "base64url").toString()).sub) throw new Error("bad token");
  };
  const rate = async (fn: () => unknown, n: number) => {
    const start = performance.now();
    for (let i = 0; i < n; i++) await fn();
    return n / ((performance.now() - start) / 1000);
  };
  await rate(() => verifier.verify(token), 2000);
  await rate(raw, 2000);
  const kitRates: number[] = [];
  const rawRates: number[] = [];
  for (let r = 0; r < 3; r++) {
    kitRates.push(await rate(() => verifier.verify(token), verifyOps));
    rawRates.push(await rate(raw, verifyOps));
  }
  const verification = {
    kitPerSec: round(median(kitRates), 0),
    rawPerSec: round(median(rawRates), 0),
    ratio: round(median(kitRates) / median(rawRates)),
    target: ">= 0.7",
  };
  console.log(
    `token verification: kit ${verification.kitPerSec}/s, raw crypto.verify ${verification.rawPerSec}/s → ${verification.ratio}x`,
  );

  // 2. Login throughput vs a bare argon2id loop (same parameters, same concurrency), alternating
  // rounds so that a neighbour's load hits both alike; the median round counts.
  const stored = await argon2Hash(password, argon2Params);
  const until = (ms: number) => performance.now() + ms;
  const bareLoop = async (ms: number) => {
    let n = 0;
    const end = until(ms);
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          if (!(await argon2Verify(stored, password))) throw new Error("argon2 mismatch");
          n++;
        }
      }),
    );
    return n / (ms / 1000);
  };
  // Logins go through a lean client (one prebuilt frame, answers decoded only to check for
  // tokens): connect-node's client took CPU from the service's hashing thread on these 2 cores.
  const lean = rawGrpcClient(`http://127.0.0.1:${port}`);
  const loginCall = {
    path: "/trellis.auth.v1.AuthService/Login",
    body: toBinary(LoginRequestSchema, create(LoginRequestSchema, { email, password })),
  };
  const flood = (stop: () => boolean) => {
    let done = 0;
    let failed = 0;
    const running = Promise.all(
      Array.from({ length: loginClients }, async () => {
        while (!stop()) {
          try {
            const res = fromBinary(LoginResponseSchema, await lean.call(loginCall));
            if (res.result.case === "tokens") done++;
            else failed++;
          } catch {
            failed++;
          }
        }
      }),
    );
    return running.then(() => ({ done, failed }));
  };
  const loginLoop = async (ms: number) => {
    const end = until(ms);
    const { done, failed } = await flood(() => performance.now() >= end);
    return { perSec: done / (ms / 1000), failed };
  };
  await loginLoop(1000);
  const throughputRounds: Array<{ argon2PerSec: number; loginPerSec: number; ratio: number }> = [];
  let failedLogins = 0;
  for (let r = 0; r < rounds; r++) {
    const argon2PerSec = await bareLoop(seconds * 1000);
    const login = await loginLoop(seconds * 1000);
    failedLogins += login.failed;
    throughputRounds.push({
      argon2PerSec: round(argon2PerSec, 1),
      loginPerSec: round(login.perSec, 1),
      ratio: round(login.perSec / argon2PerSec),
    });
  }
  const loginThroughput = {
    hashConcurrency: concurrency,
    loginClients,
    rounds: throughputRounds,
    failedLogins,
    ratio: round(median(throughputRounds.map((t) => t.ratio))),
    target: ">= 0.9",
  };
  console.log(
    `login throughput (${concurrency} hash at a time): ${throughputRounds
      .map((t) => `${t.loginPerSec}/s vs argon2id ${t.argon2PerSec}/s`)
      .join("; ")} → median ${loginThroughput.ratio}x`,
  );

  // 3. p99 of ListRoles (token verified, one query) idle and under the login flood, alternating.
  const auth = { headers: { authorization: `Bearer ${token}` } };
  const probe = async (n: number) => {
    const latencies: number[] = [];
    for (let i = 0; i < n; i++) {
      const start = performance.now();
      await client.listRoles({}, auth);
      latencies.push(performance.now() - start);
    }
    return latencies;
  };
  await probe(200);
  const latencyRounds: Array<{ idleP99Ms: number; loadedP99Ms: number; loadedP50Ms: number; ratio: number }> =
    [];
  for (let r = 0; r < rounds; r++) {
    const idle = await probe(probeCalls);
    let stop = false;
    const background = flood(() => stop);
    // Let the flood fill the hash queue before measuring.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const loaded = await probe(probeCalls);
    stop = true;
    await background;
    latencyRounds.push({
      idleP99Ms: round(quantile(idle, 0.99)),
      loadedP99Ms: round(quantile(loaded, 0.99)),
      loadedP50Ms: round(quantile(loaded, 0.5)),
      ratio: round(quantile(loaded, 0.99) / quantile(idle, 0.99)),
    });
  }
  const latency = {
    probeCalls,
    rounds: latencyRounds,
    ratio: round(median(latencyRounds.map((l) => l.ratio))),
    target: "<= 2",
  };
  console.log(
    `ListRoles p99: ${latencyRounds
      .map((l) => `idle ${l.idleP99Ms} ms vs during logins ${l.loadedP99Ms} ms`)
      .join("; ")} → median ${latency.ratio}x`,
  );

  lean.close();
  const file = await writeResults("auth", {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavg: loadavg() },
    inputs: {
      seconds,
      rounds,
      verifyOps,
      probeCalls,
      alg: jwk.alg,
      argon2: argon2Params,
      loginClient: "prebuilt gRPC frames over one HTTP/2 connection",
    },
    verification,
    loginThroughput,
    latency,
  });
  const [load1 = 0] = loadavg();
  if (load1 > cpus().length) {
    console.log(
      `warning: load average ${load1.toFixed(1)} on ${cpus().length} CPUs: other work skews these ratios`,
    );
  }
  console.log(`results written to ${file}`);
} finally {
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
  const nc = await connectNats(natsUrl, { name: "auth-bench" });
  await (await nc.jetstreamManager()).streams.delete(stream).catch(() => {});
  await nc.close();
  await db.drop();
}
