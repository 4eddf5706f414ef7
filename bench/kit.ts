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
import { createLogger } from "@trellis/kit/logger.js";
import { startService } from "@trellis/kit/server.js";
import { type ServiceDefinition, startServiceInstance } from "@trellis/kit/service.js";
import { createValidationInterceptor } from "@trellis/kit/validation.js";
import { pino } from "pino";
import { Registry } from "prom-client";
import { grpcFrame, h2load, type LoadOptions, type LoadResult, writeResults } from "./lib-load.js";

const requests = Number(process.env.BENCH_REQUESTS ?? 60_000);
const warmup = Math.max(2000, Math.floor(requests / 10));
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
    { logDestination: pino.destination({ dest: "/dev/null", sync: false }) },
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

async function measure(name: string, start: () => Promise<{ port: number; close: () => Promise<void> }>) {
  const server = await start();
  try {
    const url = `http://127.0.0.1:${server.port}${path}`;
    await h2load(url, { ...load, requests: warmup });
    const result = await h2load(url, load);
    if (result.failed > 0 || result.succeeded !== result.requests) {
      throw new Error(`${name}: ${result.failed} failed of ${result.requests}`);
    }
    console.log(
      `${name.padEnd(18)} ${result.rps.toFixed(0).padStart(8)} req/s  mean ${result.meanMs.toFixed(2)} ms`,
    );
    return result;
  } finally {
    await server.close();
  }
}

// Rounds, each running every configuration once, so all five see the same (noisy) machine; the
// ratios use each configuration's median round.
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));
const configs = {
  bareHttp2: ["bare http2", bareHttp2],
  bareGrpcJs: ["bare grpc-js", bareGrpcJs],
  kitNoTelemetry: ["kit, no telemetry", kitNoTelemetry],
  kit: ["kit", () => kitFull()],
  // The same with LOG_LEVEL=warn: tracing and metrics on, no per-RPC log line (its share of the cost).
  kitNoLogLine: ["kit, no log line", () => kitFull("warn")],
} as const;
type ConfigName = keyof typeof configs;
const runs = Object.fromEntries(Object.keys(configs).map((k) => [k, [] as LoadResult[]])) as Record<
  ConfigName,
  LoadResult[]
>;
for (let round = 1; round <= rounds; round++) {
  console.log(`round ${round} of ${rounds}`);
  for (const [key, [name, start]] of Object.entries(configs) as [
    ConfigName,
    (typeof configs)[ConfigName],
  ][]) {
    runs[key].push(await measure(name, start));
  }
}
const medianRun = (list: LoadResult[]) =>
  [...list].sort((a, b) => a.rps - b.rps)[Math.floor(list.length / 2)] as LoadResult;
const results = Object.fromEntries(Object.entries(runs).map(([k, list]) => [k, medianRun(list)])) as Record<
  ConfigName,
  LoadResult
>;
console.log(
  `medians: ${Object.entries(results)
    .map(([k, r]) => `${configs[k as ConfigName][0]} ${r.rps.toFixed(0)}`)
    .join(", ")} req/s`,
);

const ratios = {
  kitVsBareHttp2: results.kit.rps / results.bareHttp2.rps,
  kitVsGrpcJs: results.kit.rps / results.bareGrpcJs.rps,
  telemetryCost: 1 - results.kit.rps / results.kitNoTelemetry.rps,
  // For reference: the cost of tracing and metrics alone, without the log line.
  tracingAndMetricsCost: 1 - results.kitNoLogLine.rps / results.kitNoTelemetry.rps,
};
const targets = { kitVsBareHttp2: ">= 0.6", kitVsGrpcJs: ">= 1.2", telemetryCost: "<= 0.10" };
console.log(`kit / bare http2    ${ratios.kitVsBareHttp2.toFixed(2)}x  (target ${targets.kitVsBareHttp2})`);
console.log(`kit / bare grpc-js  ${ratios.kitVsGrpcJs.toFixed(2)}x  (target ${targets.kitVsGrpcJs})`);
console.log(
  `telemetry cost      ${(ratios.telemetryCost * 100).toFixed(1)}%  (target ${targets.telemetryCost}; tracing and metrics without the log line ${(ratios.tracingAndMetricsCost * 100).toFixed(1)}%)`,
);
const file = await writeResults("kit", {
  when: new Date().toISOString(),
  inputs: { ...load, warmup, path, tool: "h2load -t 1", node: process.version, rounds },
  results,
  runs,
  ratios,
  targets,
});
console.log(`results in ${file}`);
