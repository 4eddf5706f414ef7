// Kit benchmark (issue 2): unary Echo through the kit (logging, metrics, tracing, access and
// validation on) against a bare node:http2 server answering a pre-encoded gRPC frame and against a
// bare @grpc/grpc-js server, each in a process of its own (bench/lib-kit-servers.ts), loaded in
// turn by h2load.
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema } from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import { type KitServerName, echoPath as path } from "./lib-kit-servers.js";
import {
  grpcFrame,
  h2load,
  type LoadOptions,
  type LoadResult,
  processCpu,
  writeResults,
} from "./lib-load.js";

// Requests per burst; every server is first warmed up with twice as many.
const requests = Number(process.env.BENCH_REQUESTS ?? 10_000);
const warmup = 2 * requests;
const request = create(EchoRequestSchema, { text: "hello trellis", repeat: 1, tags: ["a", "b"] });
const bodyFile = join(tmpdir(), `trellis-bench-echo-${process.pid}.bin`);
writeFileSync(bodyFile, grpcFrame(toBinary(EchoRequestSchema, request)));
const load: LoadOptions = {
  requests,
  clients: 8,
  streams: 16,
  headers: { "content-type": "application/grpc+proto", te: "trailers" },
  bodyFile,
};

// Every server runs at once, each in its own process (idle ones cost nothing), and is warmed up
// first; then short bursts of load go to each in turn, in an order rotated from round to round.
// Each ratio is taken within a round, whose bursts ran within seconds of each other on this shared,
// noisy machine, and the median of the rounds' ratios is reported.
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 15));
const configs: Record<KitServerName, string> = {
  bareHttp2: "bare http2",
  bareGrpcJs: "bare grpc-js",
  kitNoTelemetry: "kit, no telemetry",
  kitNoTelemetryWithContext: "kit, no telemetry, context on",
  kit: "kit",
  kitNoLogLine: "kit, no log line",
};
type ConfigName = KitServerName;
const names = Object.keys(configs) as ConfigName[];

/** Starts a configuration's server process and resolves with its port once it listens. */
function startServer(name: ConfigName): Promise<{ child: ChildProcess; port: number }> {
  const script = new URL("./lib-kit-servers.ts", import.meta.url).pathname;
  const child = spawn(process.execPath, ["--import", "tsx", script, name], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const port = /port (\d+)/.exec(out)?.[1];
      if (port) resolve({ child, port: Number(port) });
    });
    child.once("exit", (code) => reject(new Error(`${name}'s server exited (${code}) before listening`)));
  });
}

const servers: Partial<Record<ConfigName, { child: ChildProcess; port: number }>> = {};

/** A burst's h2load result and the CPU the server's process (all its threads) spent per call. */
type BurstResult = LoadResult & { cpuUsPerCall: number };

async function burst(key: ConfigName, requests: number): Promise<BurstResult> {
  const server = servers[key] as { child: ChildProcess; port: number };
  const pid = server.child.pid;
  const before = processCpu({ server: pid }).server as number;
  const result = await h2load(`http://127.0.0.1:${server.port}${path}`, { ...load, requests });
  const seconds = (processCpu({ server: pid }).server as number) - before;
  if (result.failed > 0 || result.succeeded !== result.requests) {
    throw new Error(`${configs[key]}: ${result.failed} failed of ${result.requests}`);
  }
  return { ...result, cpuUsPerCall: Math.round((seconds / requests) * 1e7) / 10 };
}

const runs = Object.fromEntries(names.map((k) => [k, [] as BurstResult[]])) as Record<
  ConfigName,
  BurstResult[]
>;
try {
  for (const key of names) servers[key] = await startServer(key);
  for (const key of names) await burst(key, warmup);
  for (let round = 0; round < rounds; round++) {
    const line: string[] = [];
    for (let i = 0; i < names.length; i++) {
      const key = names[(i + round) % names.length] as ConfigName;
      const result = await burst(key, requests);
      runs[key].push(result);
      line.push(`${configs[key]} ${result.rps.toFixed(0)}`);
    }
    console.log(`round ${round + 1} of ${rounds}: ${line.join(", ")} req/s`);
  }
} finally {
  for (const key of names) servers[key]?.child.kill("SIGTERM");
}
const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const perRound = (f: (r: Record<ConfigName, number>) => number) =>
  Array.from({ length: rounds }, (_, i) =>
    f(
      Object.fromEntries(names.map((k) => [k, (runs[k][i] as BurstResult).rps])) as Record<
        ConfigName,
        number
      >,
    ),
  );
const roundRatios = {
  kitVsBareHttp2: perRound((r) => r.kit / r.bareHttp2),
  kitVsGrpcJs: perRound((r) => r.kit / r.bareGrpcJs),
  telemetryCost: perRound((r) => 1 - r.kit / r.kitNoTelemetry),
  // For reference: the cost of tracing and metrics alone, without the log line.
  tracingAndMetricsCost: perRound((r) => 1 - r.kitNoLogLine / r.kitNoTelemetry),
  // And of AsyncLocalStorage alone (the context propagation tracing needs), with no telemetry at all.
  contextCost: perRound((r) => 1 - r.kitNoTelemetryWithContext / r.kitNoTelemetry),
};
const ratios = Object.fromEntries(Object.entries(roundRatios).map(([k, v]) => [k, median(v)])) as Record<
  keyof typeof roundRatios,
  number
>;
const medianRps = Object.fromEntries(names.map((k) => [k, Math.round(median(runs[k].map((r) => r.rps)))]));
console.log(`median req/s: ${names.map((k) => `${configs[k]} ${medianRps[k]}`).join(", ")}`);
const medianCpu = Object.fromEntries(names.map((k) => [k, median(runs[k].map((r) => r.cpuUsPerCall))]));
console.log(
  `median CPU µs per call (each server's process, all threads, with the kernel's loopback work it was charged): ${names.map((k) => `${configs[k]} ${medianCpu[k]}`).join(", ")}`,
);
const spread = (values: number[], percent = false) =>
  values.map((v) => (percent ? `${(v * 100).toFixed(0)}%` : v.toFixed(2))).join(" ");
const targets = { kitVsBareHttp2: ">= 0.6", kitVsGrpcJs: ">= 1.2", telemetryCost: "<= 0.10" };
console.log(
  `kit / bare http2    ${ratios.kitVsBareHttp2.toFixed(2)}x  (target ${targets.kitVsBareHttp2}; rounds ${spread(roundRatios.kitVsBareHttp2)})`,
);
console.log(
  `kit / bare grpc-js  ${ratios.kitVsGrpcJs.toFixed(2)}x  (target ${targets.kitVsGrpcJs}; rounds ${spread(roundRatios.kitVsGrpcJs)})`,
);
console.log(
  `telemetry cost      ${(ratios.telemetryCost * 100).toFixed(1)}%  (target ${targets.telemetryCost}; rounds ${spread(roundRatios.telemetryCost, true)})`,
);
console.log(
  `  of which tracing and metrics (no log line) ${(ratios.tracingAndMetricsCost * 100).toFixed(1)}% (rounds ${spread(roundRatios.tracingAndMetricsCost, true)})`,
);
console.log(
  `  context propagation alone (no telemetry) ${(ratios.contextCost * 100).toFixed(1)}% (rounds ${spread(roundRatios.contextCost, true)})`,
);
const file = await writeResults("kit", {
  when: new Date().toISOString(),
  inputs: {
    ...load,
    warmup,
    path,
    tool: "h2load -t 1",
    loadCpu: process.env.BENCH_LOAD_CPU ?? "any",
    node: process.version,
    rounds,
  },
  medianRps,
  medianCpu,
  runs,
  roundRatios,
  ratios,
  targets,
});
console.log(`results in ${file}`);
