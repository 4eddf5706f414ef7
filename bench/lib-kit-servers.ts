// The servers the kit benchmark compares, one per process: `node --import tsx
// bench/lib-kit-servers.ts <config>` starts one on an ephemeral port, prints "port <n>" and stops
// on SIGTERM. A process each, so that none pays for another's heap, garbage or hooks (once a
// service turns on AsyncLocalStorage for tracing, Node 20 runs an async hook for every promise
// and async resource of the whole process).
import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { context, ROOT_CONTEXT } from "@opentelemetry/api";
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
import { ensureContextManager } from "@trellis/kit/tracing.js";
import { createValidationInterceptor } from "@trellis/kit/validation.js";
import { Registry } from "prom-client";
import { grpcFrame } from "./lib-load.js";

/** The path of the method every configuration serves. */
export const echoPath = "/trellis.testing.v1.TestService/Echo";
const response = toBinary(EchoResponseSchema, create(EchoResponseSchema, { text: "hello trellis" }));

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
        path: echoPath,
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

// The same, with the context propagation tracing needs switched on and nothing else: its share.
async function kitNoTelemetryWithContext() {
  ensureContextManager();
  context.with(ROOT_CONTEXT, () => {});
  return kitNoTelemetry();
}

/** The configurations, by name: each starts its server and says how to close it. */
export const kitServers = {
  bareHttp2,
  bareGrpcJs,
  kitNoTelemetry,
  kitNoTelemetryWithContext,
  kit: () => kitFull(),
  // LOG_LEVEL=warn: tracing and metrics on, no per-RPC log line (its share of the cost).
  kitNoLogLine: () => kitFull("warn"),
} satisfies Record<string, () => Promise<{ port: number; close: () => Promise<void> }>>;

/** A configuration's name. */
export type KitServerName = keyof typeof kitServers;

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const name = process.argv[2] as KitServerName;
  const start = kitServers[name];
  if (!start) {
    console.error(`unknown configuration ${name}; one of ${Object.keys(kitServers).join(", ")}`);
    process.exit(2);
  }
  const server = await start();
  process.stdout.write(`port ${server.port}\n`);
  process.once("SIGTERM", () => {
    void server.close().then(() => process.exit(0));
  });
}
