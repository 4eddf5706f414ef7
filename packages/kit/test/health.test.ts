import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  Health,
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@trellis/gen/grpc/health/v1/health_pb.js";
import { connect, type NatsConnection } from "nats";
import type { RunningService } from "../src/server.js";
import { eventually, startNatsServer, type TestNatsServer } from "../src/testing.js";
import { grpcJsClient, grpcJsUnary, startTestService } from "./support/test-service.js";

const testService = "trellis.testing.v1.TestService";

/** Reads a Watch stream message by message, so a test can wait for the next status. */
function watcher(stream: AsyncIterable<HealthCheckResponse>) {
  const iterator = stream[Symbol.asyncIterator]();
  return {
    async next(): Promise<ServingStatus | "ended"> {
      const result = await iterator.next();
      return result.done ? "ended" : result.value.status;
    },
    /** Reads until the given status arrives; fails if the stream ends first. */
    async until(status: ServingStatus): Promise<void> {
      for (;;) {
        const next = await this.next();
        if (next === status) return;
        assert.notEqual(next, "ended", `stream ended before ${ServingStatus[status]}`);
      }
    },
  };
}

describe("health reflects a real dependency (nats-server)", () => {
  let nats: TestNatsServer;
  let connection: NatsConnection;
  let running: RunningService;
  let health: ReturnType<typeof createClient<typeof Health>>;
  const abort = new AbortController();

  before(async () => {
    nats = await startNatsServer("/usr/sbin/nats-server");
    connection = await connect({
      servers: nats.url,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 50,
    });
    running = await startTestService({
      health: { nats: () => connection.flush() },
      healthIntervalMs: 50,
      healthTimeoutMs: 250,
    });
    health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${running.port}` }));
  });
  after(async () => {
    abort.abort();
    await running.close();
    await connection.close();
    await nats.dispose();
  });

  test("SERVING while up, NOT_SERVING while down, SERVING again once back (Check and Watch)", async () => {
    assert.equal((await health.check({})).status, ServingStatus.SERVING);
    assert.equal((await health.check({ service: testService })).status, ServingStatus.SERVING);
    const overall = watcher(health.watch({}, { signal: abort.signal }));
    const perService = watcher(health.watch({ service: testService }, { signal: abort.signal }));
    assert.equal(await overall.next(), ServingStatus.SERVING);
    assert.equal(await perService.next(), ServingStatus.SERVING);

    await nats.stop();
    await overall.until(ServingStatus.NOT_SERVING);
    await perService.until(ServingStatus.NOT_SERVING);
    assert.equal((await health.check({})).status, ServingStatus.NOT_SERVING);
    assert.equal((await health.check({ service: testService })).status, ServingStatus.NOT_SERVING);
    assert.deepEqual(running.health.failing(), ["nats"]);

    await nats.start();
    await overall.until(ServingStatus.SERVING);
    await perService.until(ServingStatus.SERVING);
    assert.equal((await health.check({})).status, ServingStatus.SERVING);
  });

  test("a stock grpc-js client's Check works on the wire", async () => {
    const client = grpcJsClient(running.port);
    try {
      const response = await grpcJsUnary(
        client,
        "/grpc.health.v1.Health/Check",
        HealthCheckRequestSchema,
        HealthCheckResponseSchema,
        create(HealthCheckRequestSchema, { service: testService }),
      );
      assert.equal(response.status, ServingStatus.SERVING);
      await assert.rejects(
        grpcJsUnary(
          client,
          "/grpc.health.v1.Health/Check",
          HealthCheckRequestSchema,
          HealthCheckResponseSchema,
          create(HealthCheckRequestSchema, { service: "no.such.Service" }),
        ),
        (error: grpc.ServiceError) => {
          assert.equal(error.code, grpc.status.NOT_FOUND);
          return true;
        },
      );
    } finally {
      client.close();
    }
  });

  test("an unknown service: Check NOT_FOUND, Watch SERVICE_UNKNOWN with the stream kept open", async () => {
    await assert.rejects(health.check({ service: "no.such.Service" }), (error: unknown) => {
      assert.equal(ConnectError.from(error).code, Code.NotFound);
      return true;
    });
    const local = new AbortController();
    const unknown = watcher(health.watch({ service: "no.such.Service" }, { signal: local.signal }));
    assert.equal(await unknown.next(), ServingStatus.SERVICE_UNKNOWN);
    local.abort();
  });

  test("List names the overall status and every served service", async () => {
    const { statuses } = await health.list({});
    assert.deepEqual(Object.keys(statuses).sort(), ["", testService]);
    assert.equal(statuses[testService]?.status, ServingStatus.SERVING);
  });
});

describe("health without dependency checks", () => {
  let running: RunningService;
  before(async () => {
    running = await startTestService();
  });
  after(() => running.close());

  test("is SERVING", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${running.port}` }));
    assert.equal((await health.check({})).status, ServingStatus.SERVING);
  });
});

describe("a dependency down at start", () => {
  test("starts NOT_SERVING and turns SERVING when the check passes", async () => {
    let up = false;
    const running = await startTestService({
      health: {
        flaky: async () => {
          if (!up) throw new Error("down");
        },
      },
      healthIntervalMs: 20,
    });
    try {
      assert.equal(running.health.status(), ServingStatus.NOT_SERVING);
      up = true;
      await eventually(() => running.health.status() === ServingStatus.SERVING, { what: "SERVING" });
    } finally {
      await running.close();
    }
  });

  test("a check that hangs counts as down", async () => {
    const running = await startTestService({
      health: { hangs: () => new Promise<void>(() => {}) },
      healthIntervalMs: 20,
      healthTimeoutMs: 50,
    });
    try {
      assert.equal(running.health.status(), ServingStatus.NOT_SERVING);
      assert.deepEqual(running.health.failing(), ["hangs"]);
    } finally {
      await running.close();
    }
  });
});
