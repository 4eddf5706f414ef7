import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@trellis/gen/grpc/health/v1/health_pb.js";
import {
  SleepRequestSchema,
  SleepResponseSchema,
  TestService,
} from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import pino from "pino";
import { installSignalHandlers } from "../src/server.js";
import { grpcJsClient, grpcJsUnary, startTestService } from "./support/test-service.js";

const sleepPath = "/trellis.testing.v1.TestService/Sleep";

/** A promise with its resolve function, to hold a handler until the test lets it go. */
function latch() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

async function statusOf(url: string): Promise<number> {
  const response = await fetch(url);
  await response.arrayBuffer();
  return response.status;
}

function assertRefused(error: unknown): true {
  assert.equal(ConnectError.from(error).code, Code.Unavailable);
  return true;
}

describe("graceful shutdown", () => {
  test("in-flight calls complete, new calls are refused, probes fail during the drain, hooks run after", async () => {
    const started = latch();
    const release = latch();
    const events: string[] = [];
    let sleeping = 0;
    const running = await startTestService(
      {
        adminPort: 0,
        shutdownGraceMs: 30_000,
        onShutdown: [
          async () => {
            events.push("hook 1");
          },
          async () => {
            events.push("hook 2");
          },
        ],
      },
      {
        sleepStarted: () => {
          if (++sleeping === 3) started.open();
          return release.opened;
        },
        sleepFinished: () => events.push("sleep finished"),
      },
    );
    const baseUrl = `http://127.0.0.1:${running.port}`;
    const admin = `http://127.0.0.1:${running.adminPort}`;
    assert.equal(await statusOf(`${admin}/readyz`), 200);
    assert.equal(await statusOf(`${admin}/healthz`), 200);

    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    // Connect JSON over HTTP/2 is served on the kit's fast path, like gRPC: it drains the same way.
    const json = createClient(TestService, createConnectTransport({ baseUrl, httpVersion: "2" }));
    const stock = grpcJsClient(running.port);
    const watch = createClient(Health, createGrpcTransport({ baseUrl })).watch({});
    const watched: ServingStatus[] = [];
    const watchDone = (async () => {
      for await (const message of watch) watched.push(message.status);
    })();
    try {
      // The clients hold a connection each, and a call each is in flight when close() starts.
      const inFlight = client.sleep({ millis: 500 });
      const jsonInFlight = json.sleep({ millis: 500 });
      const stockInFlight = grpcJsUnary(
        stock,
        sleepPath,
        SleepRequestSchema,
        SleepResponseSchema,
        create(SleepRequestSchema, { millis: 500 }),
      );
      await started.opened;

      const closing = running.close();
      assert.equal(running.close(), closing, "close() is idempotent");
      assert.equal(running.health.status(), ServingStatus.NOT_SERVING);
      assert.equal(await statusOf(`${admin}/readyz`), 503);
      assert.equal(await statusOf(`${admin}/healthz`), 503);

      // New calls: on the connection that got GOAWAY, on a fresh connection, and from grpc-js.
      await assert.rejects(client.echo({ text: "after close" }), assertRefused);
      await assert.rejects(json.echo({ text: "after close" }), assertRefused);
      const fresh = createClient(TestService, createGrpcTransport({ baseUrl }));
      await assert.rejects(fresh.echo({ text: "after close" }), assertRefused);
      const freshStock = grpcJsClient(running.port);
      try {
        await assert.rejects(
          grpcJsUnary(
            freshStock,
            sleepPath,
            SleepRequestSchema,
            SleepResponseSchema,
            create(SleepRequestSchema, { millis: 0 }),
          ),
          (error: grpc.ServiceError) => {
            assert.equal(error.code, grpc.status.UNAVAILABLE);
            return true;
          },
        );
      } finally {
        freshStock.close();
      }
      assert.deepEqual(events, [], "hooks wait for in-flight calls");

      release.open();
      assert.equal((await inFlight).sleptMillis, 500);
      assert.equal((await jsonInFlight).sleptMillis, 500);
      assert.equal((await stockInFlight).sleptMillis, 500);
      await closing;
      assert.deepEqual(events, ["sleep finished", "sleep finished", "sleep finished", "hook 1", "hook 2"]);

      await watchDone;
      assert.equal(watched.at(-1), ServingStatus.NOT_SERVING, "Watch ends on NOT_SERVING");
      await assert.rejects(fetch(`${admin}/healthz`), "the admin server is closed last");
    } finally {
      release.open();
      stock.close();
      await running.close();
    }
  });

  test("calls still running when the grace period ends are cancelled, and hooks still run", async () => {
    const started = latch();
    let hookRan = false;
    const running = await startTestService(
      {
        shutdownGraceMs: 100,
        onShutdown: [
          async () => {
            hookRan = true;
          },
        ],
      },
      { sleepStarted: () => started.open() },
    );
    const client = createClient(
      TestService,
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${running.port}` }),
    );
    const stuck = client.sleep({ millis: 60_000 });
    const outcome = stuck.then(
      () => "completed",
      () => "failed",
    );
    await started.opened;
    await running.close();
    assert.equal(await outcome, "failed");
    assert.equal(hookRan, true);
  });

  test("a failing hook does not stop the later ones", async () => {
    const ran: string[] = [];
    const running = await startTestService({
      onShutdown: [
        async () => {
          throw new Error("flush failed");
        },
        async () => {
          ran.push("pools closed");
        },
      ],
    });
    await running.close();
    assert.deepEqual(ran, ["pools closed"]);
  });

  test("installSignalHandlers closes once on SIGTERM", async () => {
    let calls = 0;
    const closed = latch();
    const remove = installSignalHandlers(
      {
        close: async () => {
          calls++;
          closed.open();
        },
      },
      pino({ level: "silent" }),
      { exit: false },
    );
    try {
      process.emit("SIGTERM", "SIGTERM");
      await closed.opened;
      assert.equal(calls, 1);
    } finally {
      remove();
    }
  });
});

describe("signals under a supervisor", () => {
  // Handlers over a service whose close() counts its calls; the process is not exited.
  const handlers = (supervised: boolean) => {
    const closed = latch();
    const state = { calls: 0, closed, remove: () => {} };
    state.remove = installSignalHandlers(
      {
        close: async () => {
          state.calls++;
          closed.open();
        },
      },
      pino({ level: "silent" }),
      { exit: false, supervised },
    );
    return state;
  };

  test("a supervised service ignores SIGINT and closes once on the supervisor's SIGTERM", async () => {
    const h = handlers(true);
    try {
      process.emit("SIGINT", "SIGINT");
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(h.calls, 0, "SIGINT is left to the supervisor");
      process.emit("SIGTERM", "SIGTERM");
      await h.closed.opened;
      assert.equal(h.calls, 1);
    } finally {
      h.remove();
    }
  });

  test("unsupervised, SIGINT shuts down as SIGTERM does", async () => {
    const h = handlers(false);
    try {
      process.emit("SIGINT", "SIGINT");
      await h.closed.opened;
      assert.equal(h.calls, 1);
    } finally {
      h.remove();
    }
  });
});

describe("call signals", () => {
  test("many calls in flight that read their signal raise no listener-leak warning", async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on("warning", onWarning);
    const running = await startTestService();
    try {
      const client = createClient(
        TestService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${running.port}` }),
      );
      const replies = await Promise.all(Array.from({ length: 25 }, () => client.sleep({ millis: 50 })));
      assert.equal(replies.length, 25);
      // Warnings are emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(
        warnings.filter((name) => name === "MaxListenersExceededWarning"),
        [],
      );
    } finally {
      process.off("warning", onWarning);
      await running.close();
    }
  });
});
