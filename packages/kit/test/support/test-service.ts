import { setTimeout as sleep } from "node:timers/promises";
import { create, type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import {
  CountResponseSchema,
  EchoResponseSchema,
  file_trellis_testing_v1_testing,
  InternalPingResponseSchema,
  SleepResponseSchema,
  TestService,
} from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import pino from "pino";
import { Registry } from "prom-client";
import { callerServiceKey } from "../../src/context.js";
import { type RunningService, type ServiceOptions, startService } from "../../src/server.js";

/** Hooks the test handlers call, so tests can hold a call in flight and see it finish. */
export interface TestHooks {
  /** Called when Sleep starts; Sleep waits for the returned promise, then for its millis. */
  sleepStarted?: () => Promise<void> | void;
  /** Called when Sleep is about to answer. */
  sleepFinished?: () => void;
}

/** Simple TestService handlers: Echo repeats, InternalPing names the caller, Sleep waits, Count streams. */
export function testRoutes(hooks: TestHooks = {}) {
  return (router: ConnectRouter) => {
    router.service(TestService, {
      echo: (req) => create(EchoResponseSchema, { text: req.text.repeat(Math.max(1, req.repeat)) }),
      internalPing: (_req, ctx) =>
        create(InternalPingResponseSchema, { caller: ctx.values.get(callerServiceKey) ?? "" }),
      async sleep(req, ctx) {
        await hooks.sleepStarted?.();
        await sleep(req.millis, undefined, { signal: ctx.signal });
        hooks.sleepFinished?.();
        return create(SleepResponseSchema, { sleptMillis: req.millis });
      },
      async *count(req) {
        for (let value = 1; value <= req.n; value++) {
          if (value > 1) await sleep(req.intervalMillis);
          yield create(CountResponseSchema, { value });
        }
      },
    });
  };
}

/** Starts the test service on 127.0.0.1 port 0 with a silent logger and its own registry. */
export function startTestService(
  overrides: Partial<ServiceOptions> = {},
  hooks: TestHooks = {},
): Promise<RunningService> {
  return startService({
    name: "testing",
    host: "127.0.0.1",
    port: 0,
    routes: testRoutes(hooks),
    files: [file_trellis_testing_v1_testing],
    logger: pino({ level: "silent" }),
    metrics: new Registry(),
    ...overrides,
  });
}

/** A grpc-js serializer pair built from protobuf-es schemas. */
export function codec<I extends DescMessage, O extends DescMessage>(input: I, output: O) {
  return {
    serialize: (message: MessageShape<I>) => Buffer.from(toBinary(input, message)),
    deserialize: (bytes: Buffer) => fromBinary(output, bytes),
  };
}

/** One unary call with a stock @grpc/grpc-js client; rejects with the grpc-js ServiceError. */
export function grpcJsUnary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  path: string,
  input: I,
  output: O,
  message: MessageShape<I>,
): Promise<MessageShape<O>> {
  const { serialize, deserialize } = codec(input, output);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(path, serialize, deserialize, message, (error, value) => {
      if (error) reject(error);
      else if (value === undefined) reject(new Error("no response"));
      else resolve(value);
    });
  });
}

/** A plaintext (h2c) grpc-js client for 127.0.0.1:port. */
export function grpcJsClient(port: number): grpc.Client {
  return new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}
