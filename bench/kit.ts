// Kit benchmark (issue 2): unary Echo through the kit (logging, metrics, tracing, access and
// validation on) against a bare node:http2 server answering a pre-encoded gRPC frame and against a
// bare @grpc/grpc-js server, all in this process, loaded one after another by h2load.
import { writeFileSync } from "node:fs";
import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  file_trellis_testing_v1_testing,
  TestService,
} from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import { createAccessInterceptor } from "@trellis/kit/access.js";
import { createLogDestination, createLogger } from "@trellis/kit/logger.js";
import { startService } from "@trellis/kit/server.js";
import { type ServiceDefinition, startServiceInstance } from "@trellis/kit/service.js";
import { createValidationInterceptor } from "@trellis/kit/validation.js";
import { Registry } from "prom-client";
import { grpcFrame, h2load, type LoadOptions, type LoadResult, writeResults } from "./lib-load.js";

// Requests per burst; every server is first warmed up with twice as many.
const requests = Number(process.env.BENCH_REQUESTS ?? 10_000);
const warmup = 2 * requests;
const path = "/trellis.testing.v1.TestService/Echo";
const request = create(EchoRequestSchema, { text: "hello trellis", repeat: 1, tags: ["a", "b"] });
const response = toBinary(EchoResponseSchema, create(EchoResponseSchema, { text: "hello trellis" }));
const bodyFile = join(tmpdir(), `trellis-bench-echo-${process.pid}.bin`);
writeFileSync(bodyFile, grpcFrame(toBinary(EchoRequestSchema, request)));
const load: LoadOptions = {
  requests,
  clients: 8,
  streams: 16,
  headers: { "content-type": "application/grpc+proto", te: "trailers" },
  bodyFile,
};

const echo = (text: string, repeat: number) => ({ text: text.repeat(Math.max(1, repeat)) });

async function bareHttp2(): Promise<{ port: number; close: () => Promise<void> }> {
  const frame = grpcFrame(response);
  const server: Http2Server = createServer();
  server.on("stream", (stream) => {
    stream.on("data", () => {});
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(frame);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

async function bareGrpcJs(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = new grpc.Server();
  server.addService(
    {
      Echo: {
        path,
        requestStream: false,
        responseStream: false,
        requestSerialize: (m: ReturnType<typeof create<typeof EchoRequestSchema>>) =>
          Buffer.from(toBinary(EchoRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(EchoRequestSchema, b),
        responseSerialize: (m: ReturnType<typeof create<typeof EchoResponseSchema>>) =>
          Buffer.from(toBinary(EchoResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(EchoResponseSchema, b),
      },
    },
    {
      Echo: (
        call: grpc.ServerUnaryCall<{ text: string; repeat: number }, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) => cb(null, create(EchoResponseSchema, echo(call.request.text, call.request.repeat))),
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { port, close: () => new Promise((r) => server.tryShutdown(() => r())) };
}

const definition: ServiceDefinition = {
  name: "bench",
  defaultPort: 0,
  files: [file_trellis_testing_v1_testing],
  async create() {
    return {
      routes: (router) =>
        router.service(TestService, {
          echo: (req) => echo(req.text, req.repeat),
        }),
    };
  },
};

// The whole kit as a service gets it: tracing, metrics, logging (info, to /dev/null), access, validation.
async function kitFull(logLevel = "info") {
  const instance = await startServiceInstance(
    definition,
    { HOST: "127.0.0.1", PORT: "0", ADMIN_PORT: "0", LOG_LEVEL: logLevel },
    { logDestination: createLogDestination("/dev/null") },
  );
  return { port: instance.port, close: () => instance.close() };
}

// The kit's server with access and validation only: the telemetry's cost is the difference.
async function kitNoTelemetry() {
  const logger = createLogger({ service: "bench", level: "silent" });
  const running = await startService({
    name: "bench",
    host: "127.0.0.1",
    port: 0,
    routes: (router) => router.service(TestService, { echo: (req) => echo(req.text, req.repeat) }),
    files: [file_trellis_testing_v1_testing],
    interceptors: [
      createAccessInterceptor({
        verifier: {
          verify: () => Promise.reject(new Error("no tokens in this benchmark")),
        },
      }),
      createValidationInterceptor(),
    ],
    logger,
    metrics: new Registry(),
  });
  return { port: running.port, close: () => running.close() };
}

// All five servers run at once (idle ones cost nothing) and are warmed up first; then short bursts
// of load go to each in turn, in an order rotated from round to round. Each ratio is taken within
// a round, whose bursts ran within seconds of each other on this shared, noisy machine, and the
// median of the rounds' ratios is reported.
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 15));
const configs = {
  bareHttp2: ["bare http2", bareHttp2],
  bareGrpcJs: ["bare grpc-js", bareGrpcJs],
  kitNoTelemetry: ["kit, no telemetry", kitNoTelemetry],
  kit: ["kit", () => kitFull()],
  // The same with LOG_LEVEL=warn: tracing and metrics on, no per-RPC log line (its share of the cost).
  kitNoLogLine: ["kit, no log line", () => kitFull("warn")],
} as const;
type ConfigName = keyof typeof configs;
const names = Object.keys(configs) as ConfigName[];
const servers = {} as Record<ConfigName, { port: number; close: () => Promise<void> }>;
for (const key of names) servers[key] = await configs[key][1]();

async function burst(key: ConfigName, requests: number): Promise<LoadResult> {
  const result = await h2load(`http://127.0.0.1:${servers[key].port}${path}`, { ...load, requests });
  if (result.failed > 0 || result.succeeded !== result.requests) {
    throw new Error(`${configs[key][0]}: ${result.failed} failed of ${result.requests}`);
  }
  return result;
}

const runs = Object.fromEntries(names.map((k) => [k, [] as LoadResult[]])) as Record<
  ConfigName,
  LoadResult[]
>;
try {
  for (const key of names) await burst(key, warmup);
  for (let round = 0; round < rounds; round++) {
    const line: string[] = [];
    for (let i = 0; i < names.length; i++) {
      const key = names[(i + round) % names.length] as ConfigName;
      const result = await burst(key, requests);
      runs[key].push(result);
      line.push(`${configs[key][0]} ${result.rps.toFixed(0)}`);
    }
    console.log(`round ${round + 1} of ${rounds}: ${line.join(", ")} req/s`);
  }
} finally {
  for (const key of names) await servers[key].close();
}
const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const perRound = (f: (r: Record<ConfigName, number>) => number) =>
  Array.from({ length: rounds }, (_, i) =>
    f(
      Object.fromEntries(names.map((k) => [k, (runs[k][i] as LoadResult).rps])) as Record<ConfigName, number>,
    ),
  );
const roundRatios = {
  kitVsBareHttp2: perRound((r) => r.kit / r.bareHttp2),
  kitVsGrpcJs: perRound((r) => r.kit / r.bareGrpcJs),
  telemetryCost: perRound((r) => 1 - r.kit / r.kitNoTelemetry),
  // For reference: the cost of tracing and metrics alone, without the log line.
  tracingAndMetricsCost: perRound((r) => 1 - r.kitNoLogLine / r.kitNoTelemetry),
};
const ratios = Object.fromEntries(Object.entries(roundRatios).map(([k, v]) => [k, median(v)])) as Record<
  keyof typeof roundRatios,
  number
>;
const medianRps = Object.fromEntries(names.map((k) => [k, Math.round(median(runs[k].map((r) => r.rps)))]));
console.log(`median req/s: ${names.map((k) => `${configs[k][0]} ${medianRps[k]}`).join(", ")}`);
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
  runs,
  roundRatios,
  ratios,
  targets,
});
console.log(`results in ${file}`);
