import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { TestService } from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import { headers as natsHeaders } from "nats";
import { Registry } from "prom-client";
import { createServiceClient } from "../src/client.js";
import { requestIdKey } from "../src/context.js";
import { createLogDestination, createLogger, logFlushIntervalMs } from "../src/logger.js";
import { createRpcMetrics } from "../src/metrics.js";
import {
  createTracing,
  extractTraceContext,
  injectTraceHeaders,
  observabilityInterceptors,
  type Tracing,
} from "../src/tracing.js";

const echoMethod = "trellis.testing.v1.TestService/Echo";
const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
const parentSpanId = "00f067aa0ba902b7";
const traceparent = `00-${traceId}-${parentSpanId}-01`;

/** A logger destination keeping each line. */
function captureLogs() {
  const raw: string[] = [];
  return {
    raw,
    lines: () => raw.map((line) => JSON.parse(line) as Record<string, unknown>),
    destination: { write: (line: string) => void raw.push(line) },
  };
}

/** An h2c server on port 0 serving routes through interceptors, with x-request-id in context. */
async function serve(routes: (router: ConnectRouter) => void, interceptors: Interceptor[]) {
  const sessions = new Set<ServerHttp2Session>();
  const server = createServer(
    connectNodeAdapter({
      routes,
      interceptors,
      contextValues: (req) =>
        createContextValues().set(requestIdKey, String(req.headers["x-request-id"] ?? "")),
    }),
  );
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}

describe("createLogger", () => {
  it("never writes tokens, passwords, secrets, cookies or authorization headers", () => {
    const logs = captureLogs();
    const logger = createLogger({ service: "testing", destination: logs.destination });
    const jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXNlY3JldA";
    logger.info(
      { headers: { authorization: `Bearer ${jwt}`, cookie: "session=cookie-secret-1" } },
      "request",
    );
    logger.info({ password: "pw-secret-2", user: { refreshToken: "rt-secret-3", name: "ada" } }, "login");
    logger.info({ body: { client_secret: "cs-secret-4", nested: { deeper: { apiKey: "ak-secret-5" } } } });
    logger.child({ token: "child-secret-6" }).info("child");
    logger.warn(`called with Bearer ${jwt}`);
    logger.error(
      { err: Object.assign(new Error(`verify failed for ${jwt}`), { password: "pw-secret-7" }) },
      "x",
    );
    const all = logs.raw.join("");
    for (const secret of ["cookie-secret-1", "pw-secret-2", "rt-secret-3", "cs-secret-4", "ak-secret-5"]) {
      assert.ok(!all.includes(secret), `${secret} leaked`);
    }
    for (const secret of ["child-secret-6", "pw-secret-7", jwt, "c2lnbmF0dXJl"]) {
      assert.ok(!all.includes(secret), `${secret} leaked`);
    }
    const [first] = logs.lines();
    assert.equal(first?.service, "testing");
    assert.ok(all.includes('"name":"ada"'), "ordinary fields are kept");
  });

  it("stamps lines with the active trace and span ids", () => {
    const logs = captureLogs();
    const logger = createLogger({ service: "testing", destination: logs.destination });
    const tracing = createTracing({ service: "testing" });
    tracing.tracer.startActiveSpan("work", (span) => {
      logger.info("inside");
      span.end();
    });
    logger.info("outside");
    const [inside, outside] = logs.lines();
    assert.match(String(inside?.trace_id), /^[0-9a-f]{32}$/);
    assert.match(String(inside?.span_id), /^[0-9a-f]{16}$/);
    assert.equal(outside?.trace_id, undefined);
  });
});

describe("createLogDestination", () => {
  it("writes every line whole and in order, multi-byte text included, while writes are in flight", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trellis-log-"));
    try {
      const file = join(dir, "service.log");
      const destination = createLogDestination(file);
      const logger = createLogger({ service: "testing", destination });
      // Lines written in one go pile up behind the asynchronous write in flight, past its 16 KiB chunks.
      const count = 5000;
      for (let i = 0; i < count; i++) logger.info({ i, text: "grüße € 😀 ".repeat(i % 7) }, "line");
      await new Promise<void>((resolve, reject) => {
        destination.on("close", resolve);
        destination.on("error", reject);
        destination.end();
      });
      const lines = readFileSync(file, "utf8").trimEnd().split("\n");
      assert.equal(lines.length, count);
      lines.forEach((line, i) => {
        const parsed = JSON.parse(line) as { i: number; text: string; service: string };
        assert.equal(parsed.i, i);
        assert.equal(parsed.text, "grüße € 😀 ".repeat(i % 7));
        assert.equal(parsed.service, "testing");
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("writes a lone line without waiting for more", async () => {
    const dir = mkdtempSync(join(tmpdir(), "trellis-log-"));
    const destination = createLogDestination(join(dir, "quiet.log"));
    try {
      createLogger({ service: "testing", destination }).info("only line");
      // Short of a batch, the line goes out on the periodic flush.
      let text = "";
      for (let i = 0; i < 40 && !text.includes("only line"); i++) {
        await new Promise((resolve) => setTimeout(resolve, logFlushIntervalMs / 2));
        text = readFileSync(join(dir, "quiet.log"), "utf8");
      }
      assert.match(text, /"msg":"only line"/);
    } finally {
      destination.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const [how, ending] of [
    ["exits", "process.exit(0);"],
    ["dies of an uncaught exception", 'setTimeout(() => { throw new Error("boom"); }, 10);'],
  ] as const) {
    it(`writes the lines still buffered when the process ${how}`, () => {
      const dir = mkdtempSync(join(tmpdir(), "trellis-log-"));
      try {
        const file = join(dir, "exit.log");
        const script = [
          `import { createLogDestination, createLogger } from ${JSON.stringify(new URL("../src/logger.ts", import.meta.url).href)};`,
          `const logger = createLogger({ service: "testing", destination: createLogDestination(${JSON.stringify(file)}) });`,
          `for (let i = 0; i < 3; i++) logger.info({ i }, "before the end");`,
          ending,
        ].join("\n");
        spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
          stdio: "ignore",
        });
        const lines = readFileSync(file, "utf8").trimEnd().split("\n");
        assert.deepEqual(
          lines.map((line) => (JSON.parse(line) as { i: number }).i),
          [0, 1, 2],
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

describe("trace carriers", () => {
  it("round-trips traceparent through a record and NATS headers", () => {
    const parent = extractTraceContext({ traceparent });
    const record = injectTraceHeaders({} as Record<string, string>, parent);
    assert.equal(record.traceparent, traceparent);
    const hdrs = injectTraceHeaders(natsHeaders(), parent);
    const back = trace.getSpanContext(extractTraceContext(hdrs));
    assert.equal(back?.traceId, traceId);
    assert.equal(back?.spanId, parentSpanId);
    assert.equal(trace.getSpanContext(extractTraceContext(natsHeaders())), undefined);
  });
});

describe("observability interceptors on a real server", () => {
  const logs = captureLogs();
  const logger = createLogger({ service: "testing", destination: logs.destination });
  const registry = new Registry();
  const metrics = createRpcMetrics(registry, "testing");
  const exporter = new InMemorySpanExporter();
  let tracing: Tracing;
  let backend: Awaited<ReturnType<typeof serve>>;
  let frontend: Awaited<ReturnType<typeof serve>>;
  let downstream: ReturnType<typeof createServiceClient<typeof TestService>>;
  let client: ReturnType<typeof createClient<typeof TestService>>;
  const backendSaw: string[] = [];
  const streamSaw: Array<string | undefined> = [];

  before(async () => {
    tracing = createTracing({ service: "testing", spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    // The backend records the traceparent each call arrives with.
    backend = await serve(
      (router) =>
        router.service(TestService, {
          echo(req, ctx) {
            backendSaw.push(ctx.requestHeader.get("traceparent") ?? "");
            return { text: req.text };
          },
        }),
      [],
    );
    downstream = createServiceClient(TestService, { baseUrl: backend.url, tracer: tracing.tracer });
    frontend = await serve(
      (router) =>
        router.service(TestService, {
          async echo(req) {
            if (req.text === "internal") throw new Error("connection to postgres://app:hunter2@db failed");
            if (req.text === "invalid") throw new ConnectError("bad text", Code.InvalidArgument);
            if (req.text === "forward") return { text: (await downstream.client.echo({ text: "hop" })).text };
            return { text: req.text };
          },
          async *count(req) {
            for (let value = 1; value <= req.n; value++) {
              streamSaw.push(trace.getSpanContext(context.active())?.traceId);
              yield { value };
            }
          },
        }),
      observabilityInterceptors({ logger, metrics, tracer: tracing.tracer }),
    );
    client = createClient(TestService, createGrpcTransport({ baseUrl: frontend.url }));
  });

  after(async () => {
    downstream.close();
    await frontend.close();
    await backend.close();
    await tracing.shutdown();
  });

  beforeEach(() => {
    exporter.reset();
    logs.raw.length = 0;
    backendSaw.length = 0;
    streamSaw.length = 0;
  });

  it("counts requests, errors by code and durations per method", async () => {
    await client.echo({ text: "a" });
    await client.echo({ text: "b" });
    await assert.rejects(
      client.echo({ text: "invalid" }),
      (e) => ConnectError.from(e).code === Code.InvalidArgument,
    );
    await assert.rejects(
      client.echo({ text: "internal" }),
      (e) => ConnectError.from(e).code === Code.Internal,
    );
    const values = [];
    for await (const message of client.count({ n: 3 })) values.push(message.value);
    assert.deepEqual(values, [1, 2, 3]);

    const text = await registry.metrics();
    const labels = (code: string, method = echoMethod) =>
      `{service="testing",method="${method}",code="${code}"}`;
    assert.ok(text.includes(`rpc_requests_total${labels("ok")} 2`), text);
    assert.ok(text.includes(`rpc_requests_total${labels("invalid_argument")} 1`));
    assert.ok(text.includes(`rpc_requests_total${labels("internal")} 1`));
    assert.ok(text.includes(`rpc_errors_total${labels("invalid_argument")} 1`));
    assert.ok(text.includes(`rpc_errors_total${labels("internal")} 1`));
    assert.ok(!text.includes(`rpc_errors_total${labels("ok")}`), "ok calls are not errors");
    assert.ok(text.includes(`rpc_requests_total${labels("ok", "trellis.testing.v1.TestService/Count")} 1`));
    assert.ok(text.includes(`rpc_duration_seconds_count{service="testing",method="${echoMethod}"} 4`));
    assert.match(text, /rpc_duration_seconds_bucket\{le="0.005",service="testing",method="[^"]+Echo"\} \d/);
    assert.ok(text.includes(`rpc_in_flight{service="testing",method="${echoMethod}"} 0`));
  });

  it("answers an internal failure with a generic message and logs its cause", async () => {
    const error = await client.echo({ text: "internal" }).then(
      () => assert.fail("expected an error"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(error.code, Code.Internal);
    assert.ok(!error.rawMessage.includes("hunter2"), "raw error text must not reach the client");
    const [line] = logs.lines();
    assert.equal(line?.level, "error");
    assert.equal(line?.code, "internal");
    assert.ok(JSON.stringify(line?.err).includes("connection to"), "the cause is logged");
  });

  it("continues the caller's trace, answers its traceparent and passes it downstream", async () => {
    let answered = "";
    await client.echo(
      { text: "forward" },
      {
        headers: { traceparent, "x-request-id": "req-42" },
        onHeader: (h) => {
          answered = h.get("traceparent") ?? "";
        },
      },
    );
    const spans = exporter.getFinishedSpans();
    const server = spans.find((span) => span.kind === SpanKind.SERVER);
    const outgoing = spans.find((span) => span.kind === SpanKind.CLIENT);
    assert.ok(server && outgoing, "a server and a client span are recorded");
    assert.equal(server.name, echoMethod);
    assert.equal(server.spanContext().traceId, traceId);
    assert.equal(server.parentSpanContext?.spanId, parentSpanId);
    assert.equal(server.attributes["rpc.service"], "trellis.testing.v1.TestService");
    assert.equal(server.attributes["rpc.method"], "Echo");
    assert.equal(server.attributes["rpc.grpc.status_code"], 0);
    assert.equal(answered.split("-")[1], traceId);
    assert.equal(answered.split("-")[2], server.spanContext().spanId);
    // The handler's own call to the backend is a child of the server span, in the same trace.
    assert.equal(outgoing.spanContext().traceId, traceId);
    assert.equal(outgoing.parentSpanContext?.spanId, server.spanContext().spanId);
    assert.equal(backendSaw.length, 1);
    assert.equal(backendSaw[0]?.split("-")[1], traceId);
    assert.equal(backendSaw[0]?.split("-")[2], outgoing.spanContext().spanId);

    const line = logs.lines().find((l) => l.msg === "rpc");
    assert.equal(line?.trace_id, traceId);
    assert.equal(line?.span_id, server.spanContext().spanId);
    assert.equal(line?.code, "ok");
    assert.equal(line?.method, echoMethod);
    assert.equal(line?.request_id, "req-42");
    assert.equal(typeof line?.duration_ms, "number");
    assert.ok(!logs.raw.join("").includes("forward"), "message bodies are not logged");
  });

  it("marks server faults on the span and still answers the traceparent", async () => {
    const failed = await client.echo({ text: "internal" }, { headers: { traceparent } }).then(
      () => assert.fail("expected an error"),
      (e: unknown) => ConnectError.from(e),
    );
    await assert.rejects(client.echo({ text: "invalid" }));
    const [internal, invalid] = exporter.getFinishedSpans();
    assert.equal(internal?.status.code, SpanStatusCode.ERROR);
    assert.equal(internal?.attributes["rpc.grpc.status_code"], Code.Internal);
    assert.notEqual(invalid?.status.code, SpanStatusCode.ERROR, "a client mistake is not a server fault");
    assert.equal(failed.metadata.get("traceparent")?.split("-")[1], traceId);
  });

  it("ends a streaming call's span after its last message", async () => {
    let seen = 0;
    for await (const _ of client.count({ n: 2 }, { headers: { traceparent } })) seen++;
    assert.equal(seen, 2);
    const [span] = exporter.getFinishedSpans();
    assert.equal(span?.name, "trellis.testing.v1.TestService/Count");
    assert.equal(span?.spanContext().traceId, traceId);
    assert.deepEqual(streamSaw, [traceId, traceId], "the stream's handler runs inside the server span");
    const line = logs.lines().find((l) => l.msg === "rpc");
    assert.equal(line?.trace_id, traceId);
  });
});

describe("tracing without an exporter", () => {
  it("records nothing but still propagates the caller's trace id", async () => {
    const logs = captureLogs();
    const tracing = createTracing({ service: "testing" });
    assert.equal(tracing.recording, false);
    const server = await serve(
      (router) =>
        router.service(TestService, {
          echo(req) {
            const ids = trace.getSpanContext(context.active());
            return { text: `${req.text}:${ids?.traceId}` };
          },
        }),
      observabilityInterceptors({
        logger: createLogger({ service: "testing", destination: logs.destination }),
        tracer: tracing.tracer,
      }),
    );
    try {
      const client = createClient(TestService, createGrpcTransport({ baseUrl: server.url }));
      let answered = "";
      const res = await client.echo(
        { text: "x" },
        {
          headers: { traceparent },
          onHeader: (h) => {
            answered = h.get("traceparent") ?? "";
          },
        },
      );
      assert.equal(res.text, `x:${traceId}`);
      assert.equal(answered.split("-")[1], traceId);
      assert.notEqual(answered.split("-")[2], parentSpanId, "the server has its own span id");
      assert.equal(logs.lines()[0]?.trace_id, traceId);
      // Without an incoming trace, a new trace id is made so logs can still be correlated.
      const fresh = await client.echo({ text: "y" });
      assert.match(fresh.text, /^y:[0-9a-f]{32}$/);
    } finally {
      await server.close();
    }
  });
});
