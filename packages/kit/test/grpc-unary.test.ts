import assert from "node:assert/strict";
import { connect } from "node:http2";
import { after, before, describe, test } from "node:test";
import { gunzipSync, gzipSync } from "node:zlib";
import {
  create,
  createRegistry,
  type DescMessage,
  fromBinary,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, type ConnectRouter, createClient, type Interceptor } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { StatusSchema } from "@trellis/gen/google/rpc/status_pb.js";
import { Health } from "@trellis/gen/grpc/health/v1/health_pb.js";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  file_trellis_testing_v1_testing,
  SleepRequestSchema,
  SleepResponseSchema,
  TestService,
} from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import pino from "pino";
import { Registry } from "prom-client";
import { requestIdKey } from "../src/context.js";
import { createLoggingInterceptor } from "../src/logger.js";
import { type RunningService, type ServiceOptions, startService } from "../src/server.js";
import { eventually } from "../src/testing.js";
import { createValidationInterceptor } from "../src/validation.js";
import { codec, grpcJsClient } from "./support/test-service.js";

const echoPath = "/trellis.testing.v1.TestService/Echo";
const sleepPath = "/trellis.testing.v1.TestService/Sleep";

/** A promise with its resolve function, to hold a handler until the test lets it go. */
function latch() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

/** What the handlers saw, for the assertions. */
interface Seen {
  sleepSignal?: AbortSignal;
  interceptorUrls: string[];
}

function routes(seen: Seen, hold: Promise<void>) {
  return (router: ConnectRouter) => {
    router.service(TestService, {
      echo(req, ctx) {
        ctx.responseHeader.set("x-echo-header", "from-handler");
        ctx.responseTrailer.set("x-echo-trailer", "from-handler");
        switch (req.text) {
          case "details":
            throw new ConnectError("no such thing", Code.FailedPrecondition, undefined, [
              { desc: EchoResponseSchema, value: { text: "detail" } },
            ]);
          case "plain":
            throw new Error("connection to postgres://app:hunter2@db failed");
          case "request-id":
            return { text: ctx.values.get(requestIdKey) };
          case "signal":
            // The signal works, also behind an interceptor that passed on a copy of the request.
            return { text: `${ctx.signal.aborted}:${ctx.timeoutMs() === undefined}:${ctx.protocolName}` };
          default:
            // An init object or a message: both are answered.
            return req.repeat === 2
              ? create(EchoResponseSchema, { text: req.text.repeat(2) })
              : { text: req.text };
        }
      },
      async sleep(req, ctx) {
        seen.sleepSignal = ctx.signal;
        // Ignores its signal: the deadline must still end the call.
        await hold;
        return create(SleepResponseSchema, { sleptMillis: req.millis });
      },
      async *count(req) {
        for (let value = 1; value <= req.n; value++) yield { value };
      },
    });
  };
}

/** The TestService on its own server: logging, the given interceptors, validation; fast-path calls recorded. */
function startTesting(
  seen: Seen,
  hold: Promise<void>,
  fastCalls: string[],
  interceptors: Interceptor[],
  overrides: Partial<ServiceOptions>,
): Promise<RunningService> {
  return startService({
    name: "testing",
    host: "127.0.0.1",
    port: 0,
    routes: routes(seen, hold),
    files: [file_trellis_testing_v1_testing],
    logger: pino({ level: "silent" }),
    metrics: new Registry(),
    interceptors: [
      createLoggingInterceptor(pino({ level: "silent" })),
      ...interceptors,
      createValidationInterceptor(),
    ],
    onFastPathCall: (procedure) => fastCalls.push(procedure),
    ...overrides,
  });
}

/** One unary call with a stock grpc-js client, with metadata and call options. */
function grpcJsCall<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  path: string,
  input: I,
  output: O,
  message: MessageShape<I>,
  metadata = new grpc.Metadata(),
  options: grpc.CallOptions = {},
): Promise<{ value: MessageShape<O>; headers: grpc.Metadata; trailers: grpc.Metadata }> {
  const { serialize } = codec(input, output);
  const { deserialize } = codec(output, output);
  return new Promise((resolve, reject) => {
    let headers = new grpc.Metadata();
    let result: { error: grpc.ServiceError | null; value?: MessageShape<O> } | undefined;
    const call = client.makeUnaryRequest(
      path,
      serialize,
      deserialize,
      message,
      metadata,
      options,
      (error, value) => {
        result = { error, value };
      },
    );
    call.on("metadata", (m) => {
      headers = m;
    });
    // grpc-js emits the status (with the trailers) after it called back.
    call.on("status", (status) => {
      if (result?.error) reject(result.error);
      else if (result?.value === undefined) reject(new Error("no response"));
      else resolve({ value: result.value, headers, trailers: status.metadata });
    });
  });
}

function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

function statusDetails(error: grpc.ServiceError) {
  const [bytes] = error.metadata.get("grpc-status-details-bin");
  assert.ok(bytes instanceof Buffer, "grpc-status-details-bin is sent");
  return fromBinary(StatusSchema, bytes);
}

describe("gRPC unary fast path", () => {
  const seen: Seen = { interceptorUrls: [] };
  const hold = latch();
  const fastCalls: string[] = [];
  let running: RunningService;
  let baseUrl: string;
  let stock: grpc.Client;

  const start = (overrides: Partial<ServiceOptions> = {}) => {
    const recordUrl: Interceptor = (next) => (req) => {
      seen.interceptorUrls.push(req.url);
      // Passes on a copy of the request, as some interceptors do.
      return next({ ...req });
    };
    return startTesting(seen, hold.opened, fastCalls, [recordUrl], overrides);
  };

  before(async () => {
    running = await start();
    baseUrl = `http://127.0.0.1:${running.port}`;
    stock = grpcJsClient(running.port);
  });
  after(async () => {
    hold.open();
    stock.close();
    await running.close();
  });

  test("grpc-js and Connect's gRPC transport are answered on the fast path, with headers and trailers", async () => {
    const before = fastCalls.length;
    const { value, headers, trailers } = await grpcJsCall(
      stock,
      echoPath,
      EchoRequestSchema,
      EchoResponseSchema,
      create(EchoRequestSchema, { text: "hi", repeat: 2 }),
    );
    assert.equal(value.text, "hihi");
    assert.deepEqual(headers.get("x-echo-header"), ["from-handler"]);
    assert.deepEqual(trailers.get("x-echo-trailer"), ["from-handler"]);

    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const res = await client.echo(
      { text: "hello" },
      {
        onHeader: (h) => {
          header = h;
        },
        onTrailer: (t) => {
          trailer = t;
        },
      },
    );
    assert.equal(res.text, "hello");
    assert.equal(header?.get("x-echo-header"), "from-handler");
    assert.equal(trailer?.get("x-echo-trailer"), "from-handler");
    assert.deepEqual(fastCalls.slice(before), [echoPath, echoPath]);
    assert.match(
      seen.interceptorUrls.at(-1) ?? "",
      /^http:\/\/127\.0\.0\.1:\d+\/trellis\.testing\.v1\.TestService\/Echo$/,
    );
  });

  test("Connect unary calls over HTTP/2, JSON and binary, are answered on the fast path", async () => {
    const before = fastCalls.length;
    for (const transport of [
      createConnectTransport({ baseUrl, httpVersion: "2" }),
      createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
    ]) {
      let header: Headers | undefined;
      let trailer: Headers | undefined;
      const res = await createClient(TestService, transport).echo(
        { text: "connect", repeat: 2 },
        { onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
      );
      assert.equal(res.text, "connectconnect");
      assert.equal(header?.get("x-echo-header"), "from-handler");
      assert.equal(trailer?.get("x-echo-trailer"), "from-handler");
    }
    const signal = await createClient(
      TestService,
      createConnectTransport({ baseUrl, httpVersion: "2" }),
    ).echo({
      text: "signal",
    });
    assert.equal(signal.text, "false:true:connect");
    assert.deepEqual(fastCalls.slice(before), [echoPath, echoPath, echoPath]);
  });

  test("Connect GET, gRPC-Web, streaming and health calls still go through connect-node", async () => {
    const before = fastCalls.length;
    for (const transport of [
      createConnectTransport({ baseUrl, httpVersion: "2", useHttpGet: true }),
      createGrpcWebTransport({ baseUrl, httpVersion: "2" }),
    ]) {
      const res = await createClient(TestService, transport).echo({ text: "other" });
      assert.equal(res.text, "other");
    }
    const values: number[] = [];
    for await (const m of createClient(TestService, createGrpcTransport({ baseUrl })).count({ n: 2 })) {
      values.push(m.value);
    }
    assert.deepEqual(values, [1, 2]);
    await createClient(Health, createGrpcTransport({ baseUrl })).check({});
    assert.deepEqual(fastCalls.slice(before), []);
  });

  test("the handler's signal and context work behind an interceptor that copied the request", async () => {
    const res = await createClient(TestService, createGrpcTransport({ baseUrl })).echo({ text: "signal" });
    assert.equal(res.text, "false:true:grpc");
  });

  test("a message spread over many DATA frames is read whole", async () => {
    const padding = new Uint8Array(300_000).fill(7);
    const before = fastCalls.length;
    const { value } = await grpcJsCall(
      stock,
      echoPath,
      EchoRequestSchema,
      EchoResponseSchema,
      create(EchoRequestSchema, { text: "big", padding }),
    );
    assert.equal(value.text, "big");
    assert.equal(fastCalls.length - before, 1);
  });

  test("context values carry the request id", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-request-id", "req-7");
    const { value } = await grpcJsCall(
      stock,
      echoPath,
      EchoRequestSchema,
      EchoResponseSchema,
      create(EchoRequestSchema, { text: "request-id" }),
      metadata,
    );
    assert.equal(value.text, "req-7");
  });

  test("a ConnectError with details arrives with its code and details", async () => {
    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    const error = await client.echo({ text: "details" }).then(
      () => assert.fail("expected an error"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(error.code, Code.FailedPrecondition);
    assert.deepEqual(
      error.findDetails(EchoResponseSchema).map((d) => d.text),
      ["detail"],
    );
    assert.equal(error.metadata.get("x-echo-trailer"), "from-handler");

    await assert.rejects(
      grpcJsCall(
        stock,
        echoPath,
        EchoRequestSchema,
        EchoResponseSchema,
        create(EchoRequestSchema, { text: "details" }),
      ),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.FAILED_PRECONDITION);
        const status = statusDetails(e);
        assert.equal(status.code, Code.FailedPrecondition);
        const detail = status.details[0] && anyUnpack(status.details[0], createRegistry(EchoResponseSchema));
        assert.equal((detail as MessageShape<typeof EchoResponseSchema> | undefined)?.text, "detail");
        return true;
      },
    );
  });

  test("a plain Error from the handler is internal, with a generic message", async () => {
    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    const error = await client.echo({ text: "plain" }).then(
      () => assert.fail("expected an error"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(error.code, Code.Internal);
    assert.ok(!error.rawMessage.includes("hunter2"));
    await assert.rejects(
      grpcJsCall(
        stock,
        echoPath,
        EchoRequestSchema,
        EchoResponseSchema,
        create(EchoRequestSchema, { text: "plain" }),
      ),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.INTERNAL);
        assert.ok(!e.details.includes("hunter2"));
        return true;
      },
    );
  });

  test("the validation interceptor answers invalid_argument with a violations detail", async () => {
    const before = fastCalls.length;
    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    const error = await client.echo({ text: "" }).then(
      () => assert.fail("expected an error"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(error.code, Code.InvalidArgument);
    const [violations] = error.findDetails(ViolationsSchema);
    assert.equal(violations?.violations[0]?.field?.elements[0]?.fieldName, "text");

    await assert.rejects(
      grpcJsCall(
        stock,
        echoPath,
        EchoRequestSchema,
        EchoResponseSchema,
        create(EchoRequestSchema, { text: "" }),
      ),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT);
        const typeUrl = statusDetails(e).details[0]?.typeUrl ?? "";
        assert.ok(typeUrl.endsWith("buf.validate.Violations"), typeUrl);
        return true;
      },
    );
    assert.equal(fastCalls.length - before, 2);
  });

  test("a call past its deadline gets deadline_exceeded, even from a handler ignoring its signal", async () => {
    await assert.rejects(
      grpcJsCall(
        stock,
        sleepPath,
        SleepRequestSchema,
        SleepResponseSchema,
        create(SleepRequestSchema, { millis: 1 }),
        new grpc.Metadata(),
        { deadline: Date.now() + 200 },
      ),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.DEADLINE_EXCEEDED);
        return true;
      },
    );
    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    await assert.rejects(client.sleep({ millis: 1 }, { timeoutMs: 200 }), (e: unknown) => {
      assert.equal(ConnectError.from(e).code, Code.DeadlineExceeded);
      return true;
    });
    // Without a client enforcing the deadline too, the server answers it and aborts the handler's signal.
    seen.sleepSignal = undefined;
    const session = connect(baseUrl);
    try {
      const status = await new Promise<string | undefined>((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": sleepPath,
          "content-type": "application/grpc",
          te: "trailers",
          "grpc-timeout": "100m",
        });
        let found: string | undefined;
        stream.on("response", (headers) => {
          found = headers["grpc-status"] as string | undefined;
        });
        stream.on("trailers", (trailers) => {
          found = trailers["grpc-status"] as string | undefined;
        });
        stream.on("data", () => {});
        stream.on("end", () => resolve(found));
        stream.on("error", reject);
        stream.end(grpcFrame(toBinary(SleepRequestSchema, create(SleepRequestSchema, { millis: 1 }))));
      });
      assert.equal(status, String(Code.DeadlineExceeded));
    } finally {
      session.close();
    }
    const signal = await eventually(() => seen.sleepSignal?.aborted && seen.sleepSignal);
    assert.equal(ConnectError.from(signal.reason).code, Code.DeadlineExceeded);
  });

  test("a client cancelling the call aborts the handler's signal", async () => {
    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    seen.sleepSignal = undefined;
    const cancel = new AbortController();
    const call = client.sleep({ millis: 1 }, { signal: cancel.signal });
    const signal = await eventually(() => seen.sleepSignal);
    cancel.abort();
    await assert.rejects(call);
    await eventually(() => signal.aborted);
    assert.equal(ConnectError.from(signal.reason).code, Code.Canceled);
  });

  test("an oversized message gets resource_exhausted", async () => {
    const small = await start({ readMaxBytes: 64 });
    const smallStock = grpcJsClient(small.port);
    try {
      const client = createClient(
        TestService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${small.port}` }),
      );
      assert.equal((await client.echo({ text: "fits" })).text, "fits");
      await assert.rejects(client.echo({ text: "x".repeat(100) }), (e: unknown) => {
        assert.equal(ConnectError.from(e).code, Code.ResourceExhausted);
        return true;
      });
      await assert.rejects(
        grpcJsCall(
          smallStock,
          echoPath,
          EchoRequestSchema,
          EchoResponseSchema,
          create(EchoRequestSchema, { text: "x".repeat(100) }),
        ),
        (e: grpc.ServiceError) => {
          assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED);
          return true;
        },
      );
    } finally {
      smallStock.close();
      await small.close();
    }
  });

  test("with the fast path off, the same calls are answered by connect-node", async () => {
    const plain = await start({ grpcUnaryFastPath: false });
    const before = fastCalls.length;
    try {
      const client = createClient(
        TestService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${plain.port}` }),
      );
      assert.equal((await client.echo({ text: "slow" })).text, "slow");
      await assert.rejects(client.echo({ text: "" }), (e: unknown) => {
        assert.equal(ConnectError.from(e).code, Code.InvalidArgument);
        return true;
      });
      assert.equal(fastCalls.length, before);
    } finally {
      await plain.close();
    }
  });
});

/** One raw HTTP/2 request: what came back, byte for byte. */
async function rawCall(
  baseUrl: string,
  headers: Record<string, string>,
  body: Uint8Array,
): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  const session = connect(baseUrl);
  try {
    return await new Promise((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ...headers });
      const chunks: Buffer[] = [];
      let head: Record<string, string> = {};
      stream.on("response", (h) => {
        head = Object.fromEntries(Object.entries(h).map(([k, v]) => [k, String(v)]));
      });
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("error", reject);
      stream.on("close", () =>
        resolve({ status: Number(head[":status"]), headers: head, body: Buffer.concat(chunks) }),
      );
      stream.end(body);
    });
  } finally {
    session.close();
  }
}

describe("Connect unary fast path answers as connect-node does", () => {
  const seen: Seen = { interceptorUrls: [] };
  const hold = latch();
  const fastCalls: string[] = [];
  let fast: RunningService;
  let stock: RunningService;

  const start = (grpcUnaryFastPath: boolean) =>
    startTesting(seen, hold.opened, fastCalls, [], { readMaxBytes: 4096, grpcUnaryFastPath });

  before(async () => {
    fast = await start(true);
    stock = await start(false);
  });
  after(async () => {
    hold.open();
    await fast.close();
    await stock.close();
  });

  const json = { "content-type": "application/json", "connect-protocol-version": "1" };
  const proto = { "content-type": "application/proto", "connect-protocol-version": "1" };
  const echo = (text: string, repeat = 1) =>
    toBinary(EchoRequestSchema, create(EchoRequestSchema, { text, repeat }));
  const utf8 = (text: string) => new TextEncoder().encode(text);
  const cases: Array<[string, Record<string, string>, Uint8Array]> = [
    ["JSON", { ":path": echoPath, ...json }, utf8('{"text":"hi","repeat":2}')],
    [
      "JSON with a charset",
      { ":path": echoPath, ...json, "content-type": "application/json; charset=utf-8" },
      utf8('{"text":"hi"}'),
    ],
    ["binary", { ":path": echoPath, ...proto }, echo("hi", 2)],
    ["an error with details", { ":path": echoPath, ...json }, utf8('{"text":"details"}')],
    ["a plain Error", { ":path": echoPath, ...json }, utf8('{"text":"plain"}')],
    ["a rule broken (validation)", { ":path": echoPath, ...json }, utf8('{"text":""}')],
    ["malformed JSON", { ":path": echoPath, ...json }, utf8('{"text":')],
    ["an unknown JSON field", { ":path": echoPath, ...json }, utf8('{"text":"hi","nope":1}')],
    ["an empty JSON body", { ":path": echoPath, ...json }, new Uint8Array()],
    ["an empty binary body", { ":path": echoPath, ...proto }, new Uint8Array()],
    ["malformed binary", { ":path": echoPath, ...proto }, new Uint8Array([0x0a, 0xff])],
    ["an oversized body", { ":path": echoPath, ...json }, utf8(`{"text":"${"x".repeat(5000)}"}`)],
    [
      "a gzip request body",
      { ":path": echoPath, ...json, "content-encoding": "gzip" },
      gzipSync(utf8('{"text":"zipped"}')),
    ],
    [
      "an unknown content-encoding",
      { ":path": echoPath, ...json, "content-encoding": "zstd" },
      utf8('{"text":"hi"}'),
    ],
    [
      "a large answer, gzip accepted",
      { ":path": echoPath, ...json, "accept-encoding": "gzip" },
      utf8(`{"text":"${"y".repeat(700)}","repeat":2}`),
    ],
    [
      "a large answer, gzip not accepted",
      { ":path": echoPath, ...json },
      utf8(`{"text":"${"y".repeat(700)}","repeat":2}`),
    ],
    [
      "a malformed connect-timeout-ms",
      { ":path": echoPath, ...json, "connect-timeout-ms": "soon" },
      utf8('{"text":"hi"}'),
    ],
  ];
  // The headers both write; date and the like differ run to run.
  const compared = [
    "content-type",
    "content-encoding",
    "x-echo-header",
    "trailer-x-echo-trailer",
    "accept-encoding",
  ];
  const decoded = (r: { headers: Record<string, string>; body: Buffer }) =>
    r.headers["content-encoding"] === "gzip" ? gunzipSync(r.body) : r.body;

  for (const [name, headers, body] of cases) {
    test(`${name}: the same status, headers and body`, async () => {
      const before = fastCalls.length;
      const a = await rawCall(`http://127.0.0.1:${fast.port}`, headers, body);
      const b = await rawCall(`http://127.0.0.1:${stock.port}`, headers, body);
      assert.equal(a.status, b.status);
      for (const key of compared) assert.equal(a.headers[key], b.headers[key], key);
      assert.deepEqual(decoded(a).toString("base64"), decoded(b).toString("base64"));
      if (a.headers["content-encoding"] === undefined)
        assert.equal(Number(a.headers["content-length"]), a.body.length);
      // The request went through the fast path (the stock server never counts).
      assert.deepEqual(fastCalls.slice(before), [headers[":path"]]);
    });
  }

  test("the answers are what the cases say (not just equal on both servers)", async () => {
    const ok = await rawCall(
      `http://127.0.0.1:${fast.port}`,
      cases[0]?.[1] ?? {},
      cases[0]?.[2] ?? new Uint8Array(),
    );
    assert.equal(ok.status, 200);
    assert.deepEqual(JSON.parse(ok.body.toString()), { text: "hihi" });
    const large = cases.find((c) => c[0] === "a large answer, gzip accepted") as (typeof cases)[number];
    const zipped = await rawCall(`http://127.0.0.1:${fast.port}`, large[1], large[2]);
    assert.equal(zipped.headers["content-encoding"], "gzip");
    assert.equal(JSON.parse(gunzipSync(zipped.body).toString()).text, "y".repeat(1400));
    const invalid = await rawCall(
      `http://127.0.0.1:${fast.port}`,
      { ":path": echoPath, ...json },
      utf8('{"text":""}'),
    );
    assert.equal(invalid.status, 400);
    assert.equal(JSON.parse(invalid.body.toString()).code, "invalid_argument");
    const big = await rawCall(
      `http://127.0.0.1:${fast.port}`,
      { ":path": echoPath, ...json },
      utf8(`{"text":"${"x".repeat(5000)}"}`),
    );
    assert.equal(JSON.parse(big.body.toString()).code, "resource_exhausted");
    // A handler ignoring its signal still ends at the deadline here (connect-node would wait for it).
    const late = await rawCall(
      `http://127.0.0.1:${fast.port}`,
      { ":path": sleepPath, ...json, "connect-timeout-ms": "50" },
      utf8('{"millis":10}'),
    );
    assert.equal(JSON.parse(late.body.toString()).code, "deadline_exceeded");
  });
});
