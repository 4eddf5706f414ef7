// Gateway benchmark (issue 7): CoreService.GetOrder as Connect JSON and as gRPC, sent through the
// gateway and straight to the service, by h2load. The service (a stub CoreService assembled by the
// kit's startServiceInstance: logging, metrics, tracing ids, token checks, validation) and the
// gateway (gateway/src/main.ts) run as child processes, as in production; h2load writes one line
// per request, from which p50 is read. Ratios are gateway / direct. A bare node:http2 proxy (no
// auth, limits or logs) is measured the same way: the floor any Node.js gateway starts from.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  CoreService,
  file_trellis_core_v1_core,
  GetOrderRequestSchema,
  GetOrderResponseSchema,
  OrderStatus,
} from "@trellis/gen/trellis/core/v1/core_pb.js";
import { methodAccess } from "@trellis/kit/access.js";
import { runService } from "@trellis/kit/service.js";
import { createTestIssuer } from "@trellis/kit/test-tokens.js";
import { freePort } from "@trellis/kit/testing.js";
import { grpcFrame, processCpu, writeResults } from "./lib-load.js";

const path = "/trellis.core.v1.CoreService/GetOrder";

if (process.env.TRELLIS_BENCH_ROLE === "backend") {
  // The service side: GetOrder answers a small order, like a cached read would.
  const order = {
    orderId: "ord_0192d7a4c3b87f",
    userId: "user-1",
    status: OrderStatus.PENDING,
    paymentMethod: "pm_card_visa",
    createTime: timestampFromMs(Date.now()),
    updateTime: timestampFromMs(Date.now()),
  };
  await runService(
    {
      name: "core",
      defaultPort: 8004,
      files: [file_trellis_core_v1_core],
      async create() {
        return {
          routes: (router) =>
            router.service(CoreService, {
              getOrder: () => create(GetOrderResponseSchema, { order }),
            }),
        };
      },
    },
    process.env,
  );
} else if (process.env.TRELLIS_BENCH_ROLE === "proxy") {
  // The floor of any Node.js gateway: a bare node:http2 proxy, no auth, limits, routing or logs,
  // forwarding each stream over one HTTP/2 session to the service and the answer back.
  bareProxy(Number(process.env.PORT), String(process.env.UPSTREAM));
} else {
  await main();
}

function bareProxy(port: number, upstream: string): void {
  const session = http2.connect(upstream);
  const hopByHop = new Set([":method", ":path", ":scheme", ":authority", "connection", "host"]);
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    const out: http2.OutgoingHttpHeaders = { ":method": headers[":method"], ":path": headers[":path"] };
    for (const [k, v] of Object.entries(headers)) if (!hopByHop.has(k)) out[k] = v;
    const up = session.request(out);
    stream.pipe(up);
    let trailers: http2.IncomingHttpHeaders | undefined;
    up.on("response", (h) => {
      const { ":status": status, ...rest } = h;
      stream.respond({ ":status": status, ...rest }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers(trailers ?? {}));
      up.pipe(stream);
    });
    up.on("trailers", (t) => {
      trailers = t;
    });
    up.on("error", () => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
    stream.on("error", () => up.close(http2.constants.NGHTTP2_CANCEL));
  });
  server.listen(port, "127.0.0.1");
}

interface Run {
  /** CPU ms per request spent by the gateway and by the service during the run. */
  gatewayCpuMs?: number;
  serviceCpuMs?: number;
  readonly requests: number;
  readonly succeeded: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
}

async function h2loadRun(
  url: string,
  args: string[],
  headers: Record<string, string>,
  body: string,
): Promise<Run> {
  const log = join(tmpdir(), `trellis-bench-gw-${process.pid}-${Date.now()}.log`);
  const argv = [...args, "--log-file", log, "-d", body];
  for (const [k, v] of Object.entries(headers)) argv.push("-H", `${k}: ${v}`);
  argv.push(url);
  const { stdout } = await promisify(execFile)("h2load", argv, { maxBuffer: 1 << 24 });
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(stdout)?.[1]);
  const counts = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded/.exec(stdout);
  const lines = readFileSync(log, "utf8").trim().split("\n");
  const latencies = lines
    .map((l) => l.split("\t"))
    .filter((c) => c[1] === "200")
    .map((c) => Number(c[2]) / 1000)
    .sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  return {
    requests: Number(counts?.[1]),
    succeeded: Number(counts?.[2]),
    rps,
    p50Ms: round(pct(50)),
    p90Ms: round(pct(90)),
    p99Ms: round(pct(99)),
  };
}

/** user+system CPU time of a process so far, ms. */
const cpuMs = (pid: number | undefined) => (processCpu({ pid }).pid ?? Number.NaN) * 1000;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

async function waitForPort(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`child exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1", () => {
        s.end();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} never opened`);
}

async function main(): Promise<void> {
  const requests = Number(process.env.BENCH_REQUESTS ?? 10_000);
  // Direct and gateway runs alternate, several rounds, and the median is kept: other work on a
  // shared machine moves single runs by tens of percent.
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const issuer = await createTestIssuer();
  const jwksUrl = await issuer.serve();
  const perms = CoreService.methods.map((m) => methodAccess(m)?.permission ?? "").filter((p) => p);
  const token = await issuer.sign({ perms, expiresIn: 900 });
  const logLevel = process.env.BENCH_LOG_LEVEL ?? "info";
  const [servicePort, gatewayPort, adminPort, serviceAdmin] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const common = {
    JWKS_URL: jwksUrl,
    JWT_ISSUER: issuer.issuer,
    JWT_AUDIENCE: issuer.audience,
    LOG_LEVEL: logLevel,
  };
  const children: ChildProcess[] = [];
  const start = (args: string[], env: Record<string, string>) => {
    // BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles both children.
    const extra = (process.env.BENCH_NODE_ARGS ?? "").split(" ").filter((a) => a);
    const child = spawn(process.execPath, [...extra, "--import", "tsx", ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "ignore", "inherit"],
    });
    children.push(child);
    return child;
  };
  try {
    const backendUrl = `http://127.0.0.1:${servicePort}`;
    const service = start([new URL(import.meta.url).pathname], {
      ...common,
      TRELLIS_BENCH_ROLE: "backend",
      HOST: "127.0.0.1",
      PORT: String(servicePort),
      ADMIN_PORT: String(serviceAdmin),
    });
    await waitForPort(servicePort, service);
    const unlimited = { rate: 1e9, burst: 1e9 };
    const gateway = start([new URL("../gateway/src/main.ts", import.meta.url).pathname], {
      ...common,
      HOST: "127.0.0.1",
      GATEWAY_PORT: String(gatewayPort),
      GATEWAY_ADMIN_PORT: String(adminPort),
      AUTH_ADDRS: backendUrl,
      ANALYTICS_ADDRS: backendUrl,
      BILLING_ADDRS: backendUrl,
      CORE_ADDRS: backendUrl,
      REVOCATIONS: "false",
      // Limits stay on (their cost is measured) but high enough never to refuse.
      RATE_LIMITS: JSON.stringify({ default: { address: unlimited, user: unlimited, tenant: unlimited } }),
    });
    await waitForPort(gatewayPort, gateway);
    const proxyPort = await freePort();
    const proxy = start([new URL(import.meta.url).pathname], {
      TRELLIS_BENCH_ROLE: "proxy",
      PORT: String(proxyPort),
      UPSTREAM: backendUrl,
    });
    await waitForPort(proxyPort, proxy);

    const jsonBody = join(tmpdir(), `trellis-bench-gw-${process.pid}.json`);
    writeFileSync(jsonBody, JSON.stringify({ orderId: "ord_0192d7a4c3b87f" }));
    const grpcBody = join(tmpdir(), `trellis-bench-gw-${process.pid}.bin`);
    writeFileSync(
      grpcBody,
      grpcFrame(
        toBinary(GetOrderRequestSchema, create(GetOrderRequestSchema, { orderId: "ord_0192d7a4c3b87f" })),
      ),
    );
    const auth = { authorization: `Bearer ${token}` };
    const json = { ...auth, "content-type": "application/json", "connect-protocol-version": "1" };
    const grpc = { ...auth, "content-type": "application/grpc", te: "trailers" };
    const profiles = {
      // One request at a time: the latency a single caller sees.
      serial: ["-n", String(Math.floor(requests / 4)), "-c", "1", "-m", "1", "-t", "1"],
      // Many callers: throughput at saturation.
      loaded: ["-n", String(requests), "-c", "8", "-m", "8", "-t", "1"],
    };
    const targets = {
      directJson: [`${backendUrl}${path}`, json, jsonBody],
      gatewayJson: [`http://127.0.0.1:${gatewayPort}${path}`, json, jsonBody],
      directGrpc: [`${backendUrl}${path}`, grpc, grpcBody],
      gatewayGrpc: [`http://127.0.0.1:${gatewayPort}${path}`, grpc, grpcBody],
      bareProxyJson: [`http://127.0.0.1:${proxyPort}${path}`, json, jsonBody],
      bareProxyGrpc: [`http://127.0.0.1:${proxyPort}${path}`, grpc, grpcBody],
    } as const;
    const results: Record<string, Record<string, Run>> = {};
    const all: Record<string, Run[]> = {};
    for (const [, [url, headers, body]] of Object.entries(targets)) {
      // Warm-up: JIT, connections, key fetches.
      await h2loadRun(url, ["-n", "3000", "-c", "4", "-m", "4", "-t", "1"], headers, body);
    }
    for (let pass = 0; pass < rounds; pass++) {
      for (const [profile, args] of Object.entries(profiles)) {
        for (const [name, [url, headers, body]] of Object.entries(targets)) {
          const front = name.startsWith("bareProxy") ? proxy : gateway;
          const before = [cpuMs(front.pid), cpuMs(service.pid)];
          const run = await h2loadRun(url, args, headers, body);
          run.gatewayCpuMs = round((cpuMs(front.pid) - (before[0] ?? 0)) / run.succeeded);
          run.serviceCpuMs = round((cpuMs(service.pid) - (before[1] ?? 0)) / run.succeeded);
          const key = `${profile}/${name}`;
          all[key] = [...(all[key] ?? []), run];
          console.log(
            `${profile.padEnd(7)} ${name.padEnd(12)} ${run.rps.toFixed(0).padStart(7)} req/s  p50 ${run.p50Ms} ms  p99 ${run.p99Ms} ms  cpu/req gateway ${run.gatewayCpuMs} ms service ${run.serviceCpuMs} ms`,
          );
        }
      }
    }
    for (const [key, runs] of Object.entries(all)) {
      const [profile, name] = key.split("/") as [string, string];
      const pick = (f: (r: Run) => number) => round(median(runs.map(f)));
      const byProfile = results[profile] ?? {};
      results[profile] = byProfile;
      byProfile[name] = {
        requests: runs[0]?.requests ?? 0,
        succeeded: Math.min(...runs.map((r) => r.succeeded)),
        rps: pick((r) => r.rps),
        p50Ms: pick((r) => r.p50Ms),
        p90Ms: pick((r) => r.p90Ms),
        p99Ms: pick((r) => r.p99Ms),
        gatewayCpuMs: pick((r) => r.gatewayCpuMs ?? Number.NaN),
        serviceCpuMs: pick((r) => r.serviceCpuMs ?? Number.NaN),
      };
    }
    const ratio = (profile: string, kind: "Json" | "Grpc", front = "gateway") => {
      const direct = results[profile]?.[`direct${kind}`] as Run;
      const through = results[profile]?.[`${front}${kind}`] as Run;
      return { p50: round(through.p50Ms / direct.p50Ms), throughput: round(through.rps / direct.rps) };
    };
    const ratios = {
      json: { serial: ratio("serial", "Json"), loaded: ratio("loaded", "Json") },
      grpc: { serial: ratio("serial", "Grpc"), loaded: ratio("loaded", "Grpc") },
    };
    // The same ratios for the bare proxy: what any gateway written on node:http2 can reach here.
    const floor = {
      json: { serial: ratio("serial", "Json", "bareProxy"), loaded: ratio("loaded", "Json", "bareProxy") },
      grpc: { serial: ratio("serial", "Grpc", "bareProxy"), loaded: ratio("loaded", "Grpc", "bareProxy") },
    };
    const show = (title: string, set: typeof ratios) => {
      console.log(title);
      for (const [kind, r] of Object.entries(set)) {
        console.log(
          `  ${kind.padEnd(5)} p50 ${r.serial.p50}x (serial), ${r.loaded.p50}x (loaded); throughput ${r.loaded.throughput}x (loaded)`,
        );
      }
    };
    show("gateway / direct (targets: p50 <= 1.25x, throughput >= 0.7x):", ratios);
    show("bare node:http2 proxy / direct (the floor, for reference):", floor);
    const file = await writeResults("gateway", {
      when: new Date().toISOString(),
      inputs: {
        requests,
        rounds,
        statistic: "median of rounds",
        profiles,
        path,
        logLevel,
        tool: "h2load (h2c, --log-file for percentiles)",
        node: process.version,
      },
      results,
      ratios,
      bareProxyRatios: floor,
      targets: { p50: 1.25, throughput: 0.7 },
    });
    console.log(`results: ${file}`);
  } finally {
    for (const child of children) child.kill("SIGTERM");
    await issuer.close();
  }
}
