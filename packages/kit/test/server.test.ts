import assert from "node:assert/strict";
import { connect } from "node:http2";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  InternalPingRequestSchema,
  InternalPingResponseSchema,
  TestService,
} from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import { Counter, Registry } from "prom-client";
import { requestIdKey } from "../src/context.js";
import {
  serviceAccountFromForwardedClientCert,
  serviceAccountFromSpiffeId,
  serviceAccountFromSubjectAltName,
} from "../src/identity.js";
import type { RunningService } from "../src/server.js";
import { eventually } from "../src/testing.js";
import { createTestPki, type TestPki } from "./support/pki.js";
import { grpcJsClient, grpcJsUnary, startTestService } from "./support/test-service.js";

const echoPath = "/trellis.testing.v1.TestService/Echo";
// The test certificates name localhost; clients dial 127.0.0.1 and check the name localhost.
const tlsName = { "grpc.ssl_target_name_override": "localhost" };

describe("identity parsing", () => {
  const cases: Array<[string, string | undefined]> = [
    ["spiffe://trellis.local/ns/trellis/sa/core", "core"],
    ["spiffe://cluster.local/ns/other/sa/billing", "billing"],
    ["spiffe://example.org/sa/auth", "auth"],
    ["spiffe://trellis.local/ns/trellis/sa/", undefined],
    ["spiffe://trellis.local/ns/trellis/sa/core/extra", undefined],
    ["spiffe://trellis.local/ns/trellis/core", undefined],
    ["https://trellis.local/ns/trellis/sa/core", undefined],
    ["", undefined],
  ];
  for (const [uri, expected] of cases) {
    test(`SPIFFE id ${JSON.stringify(uri)} → ${expected}`, () => {
      assert.equal(serviceAccountFromSpiffeId(uri), expected);
    });
  }

  test("subjectaltname as Node formats it", () => {
    assert.equal(
      serviceAccountFromSubjectAltName(
        "DNS:localhost, URI:spiffe://trellis.local/ns/trellis/sa/core, IP Address:127.0.0.1",
      ),
      "core",
    );
    assert.equal(
      serviceAccountFromSubjectAltName('URI:"spiffe://trellis.local/ns/trellis/sa/core", DNS:x'),
      "core",
    );
    assert.equal(serviceAccountFromSubjectAltName("URI:https://example.com/, DNS:localhost"), undefined);
    assert.equal(serviceAccountFromSubjectAltName(undefined), undefined);
  });

  const xfcc: Array<[string, string | undefined]> = [
    [
      "By=spiffe://cluster.local/ns/trellis/sa/billing;Hash=abc;URI=spiffe://cluster.local/ns/trellis/sa/core",
      "core",
    ],
    [
      'By=spiffe://a/sa/x;Hash=1;Subject="CN=a,O=b";URI=spiffe://cluster.local/ns/trellis/sa/gateway,' +
        "By=spiffe://cluster.local/ns/trellis/sa/core;Hash=2;URI=spiffe://cluster.local/ns/trellis/sa/billing",
      "billing",
    ],
    ['Hash=1;Subject="CN=x, O=y;z";URI="spiffe://cluster.local/ns/trellis/sa/auth"', "auth"],
    ["By=spiffe://cluster.local/ns/trellis/sa/core;Hash=abc", undefined],
    ["URI=spiffe://cluster.local/ns/trellis/sa/core,Hash=2", undefined],
    ["URI=https://evil.example/sa/core", undefined],
    ["", undefined],
  ];
  for (const [header, expected] of xfcc) {
    test(`x-forwarded-client-cert ${JSON.stringify(header)} → ${expected}`, () => {
      assert.equal(serviceAccountFromForwardedClientCert(header), expected);
    });
  }
});

describe("service over h2c", () => {
  let running: RunningService;
  let baseUrl: string;
  before(async () => {
    running = await startTestService();
    baseUrl = `http://127.0.0.1:${running.port}`;
  });
  after(() => running.close());

  test("a stock @grpc/grpc-js client calls Echo", async () => {
    const client = grpcJsClient(running.port);
    try {
      const response = await grpcJsUnary(
        client,
        echoPath,
        EchoRequestSchema,
        EchoResponseSchema,
        create(EchoRequestSchema, { text: "hi", repeat: 2 }),
      );
      assert.equal(response.text, "hihi");
    } finally {
      client.close();
    }
  });

  test("Connect JSON, Connect binary, gRPC and gRPC-Web all answer on the one port", async () => {
    const transports = {
      connectJson: createConnectTransport({ baseUrl, httpVersion: "2" }),
      connectBinary: createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
      grpc: createGrpcTransport({ baseUrl }),
      grpcWeb: createGrpcWebTransport({ baseUrl, httpVersion: "2" }),
    };
    for (const [name, transport] of Object.entries(transports)) {
      const client = createClient(TestService, transport);
      const response = await client.echo({ text: name });
      assert.equal(response.text, name);
      const values: number[] = [];
      for await (const message of client.count({ n: 3 })) values.push(message.value);
      assert.deepEqual(values, [1, 2, 3], name);
    }
  });

  test("a message over the default 4 MiB limit gets resource_exhausted", async () => {
    const padding = new Uint8Array(4 * 1024 * 1024 + 1);
    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    await assert.rejects(client.echo({ text: "big", padding }), (error: unknown) => {
      assert.equal(ConnectError.from(error).code, Code.ResourceExhausted);
      return true;
    });
    const stock = grpcJsClient(running.port);
    try {
      await assert.rejects(
        grpcJsUnary(
          stock,
          echoPath,
          EchoRequestSchema,
          EchoResponseSchema,
          create(EchoRequestSchema, { padding }),
        ),
        (error: grpc.ServiceError) => {
          assert.equal(error.code, grpc.status.RESOURCE_EXHAUSTED);
          return true;
        },
      );
    } finally {
      stock.close();
    }
  });

  test("readMaxBytes is configurable", async () => {
    const small = await startTestService({ readMaxBytes: 64 });
    try {
      const client = createClient(
        TestService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${small.port}` }),
      );
      assert.equal((await client.echo({ text: "fits" })).text, "fits");
      await assert.rejects(client.echo({ text: "x".repeat(100) }), (error: unknown) => {
        assert.equal(ConnectError.from(error).code, Code.ResourceExhausted);
        return true;
      });
    } finally {
      await small.close();
    }
  });

  test("malformed JSON over Connect gets invalid_argument", async () => {
    const session = connect(baseUrl);
    try {
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": echoPath,
          "content-type": "application/json",
          "connect-protocol-version": "1",
        });
        let status = 0;
        let body = "";
        stream.on("response", (headers) => {
          status = Number(headers[":status"]);
        });
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => {
          body += chunk;
        });
        stream.on("end", () => resolve({ status, body }));
        stream.on("error", reject);
        stream.end('{"text": "unterminated');
      });
      assert.equal(status, 400);
      assert.equal((JSON.parse(body) as { code: string }).code, "invalid_argument");
    } finally {
      session.close();
    }
  });

  test("without TLS the caller has no service identity, even with a forwarded header", async () => {
    const client = createClient(TestService, createGrpcTransport({ baseUrl }));
    const headers = { "x-forwarded-client-cert": "By=x;URI=spiffe://cluster.local/ns/trellis/sa/core" };
    assert.equal((await client.internalPing({}, { headers })).caller, "");
  });
});

describe("startup", () => {
  test("a port in use fails the start", async () => {
    const first = await startTestService();
    try {
      await assert.rejects(startTestService({ port: first.port }), { code: "EADDRINUSE" });
    } finally {
      await first.close();
    }
  });
});

describe("request context", () => {
  test("the request id comes from x-request-id, or a fresh one is made", async () => {
    const seen: string[] = [];
    const running = await startTestService({
      interceptors: [
        (next) => (req) => {
          seen.push(req.contextValues.get(requestIdKey));
          return next(req);
        },
      ],
    });
    try {
      const client = createClient(
        TestService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${running.port}` }),
      );
      await client.echo({ text: "a" }, { headers: { "x-request-id": "req-123" } });
      await client.echo({ text: "b" });
      await client.echo({ text: "c" });
      assert.equal(seen[0], "req-123");
      assert.match(seen[1] ?? "", /^[0-9a-f-]{36}$/);
      assert.notEqual(seen[1], seen[2]);
    } finally {
      await running.close();
    }
  });
});

describe("admin server", () => {
  test("/healthz, /readyz follow health, /metrics serves the registry, anything else 404", async () => {
    const metrics = new Registry();
    new Counter({ name: "trellis_admin_test_total", help: "a test counter", registers: [metrics] }).inc(3);
    let up = true;
    const running = await startTestService({
      adminPort: 0,
      metrics,
      health: {
        dependency: async () => {
          if (!up) throw new Error("down");
        },
      },
      healthIntervalMs: 20,
    });
    const admin = `http://127.0.0.1:${running.adminPort}`;
    try {
      const scrape = await fetch(`${admin}/metrics`);
      assert.equal(scrape.status, 200);
      assert.equal(scrape.headers.get("content-type"), metrics.contentType);
      assert.match(await scrape.text(), /^trellis_admin_test_total 3$/m);
      assert.equal((await fetch(`${admin}/readyz`)).status, 200);
      assert.equal((await fetch(`${admin}/healthz`)).status, 200);
      assert.equal((await fetch(`${admin}/nope`)).status, 404);
      assert.equal((await fetch(`${admin}/metrics`, { method: "POST" })).status, 405);

      up = false;
      await eventually(async () => (await fetch(`${admin}/readyz`)).status === 503, { what: "readyz 503" });
      assert.equal((await fetch(`${admin}/healthz`)).status, 200, "alive while a dependency is down");
      up = true;
      await eventually(async () => (await fetch(`${admin}/readyz`)).status === 200, { what: "readyz 200" });
    } finally {
      await running.close();
    }
  });
});

describe("behind a mesh sidecar (trustForwardedIdentity)", () => {
  test("the caller comes from x-forwarded-client-cert", async () => {
    const running = await startTestService({ trustForwardedIdentity: true });
    try {
      const client = createClient(
        TestService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${running.port}` }),
      );
      const headers = {
        "x-forwarded-client-cert":
          "By=spiffe://cluster.local/ns/trellis/sa/billing;Hash=abc;URI=spiffe://cluster.local/ns/trellis/sa/core",
      };
      assert.equal((await client.internalPing({}, { headers })).caller, "core");
      assert.equal((await client.internalPing({})).caller, "");
    } finally {
      await running.close();
    }
  });
});

describe("service over TLS with client certificates", () => {
  let pki: TestPki;
  let running: RunningService;
  let baseUrl: string;
  before(async () => {
    pki = await createTestPki();
    const server = await pki.issue("testing");
    running = await startTestService({ tls: { ...server, ca: pki.ca } });
    baseUrl = `https://127.0.0.1:${running.port}`;
  });
  after(async () => {
    await running.close();
    await pki.dispose();
  });

  test("a client with a cert is identified by its SPIFFE service account (gRPC and Connect/HTTP 1.1)", async () => {
    const core = await pki.issue("core");
    const nodeOptions = { ca: pki.ca, cert: core.cert, key: core.key, servername: "localhost" };
    const overGrpc = createClient(TestService, createGrpcTransport({ baseUrl, nodeOptions }));
    assert.equal((await overGrpc.internalPing({})).caller, "core");
    const overHttp1 = createClient(
      TestService,
      createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions }),
    );
    assert.equal((await overHttp1.internalPing({})).caller, "core");
  });

  test("a stock grpc-js client with a cert is identified too", async () => {
    const core = await pki.issue("core");
    const credentials = grpc.credentials.createSsl(
      Buffer.from(pki.ca),
      Buffer.from(core.key),
      Buffer.from(core.cert),
    );
    const client = new grpc.Client(`127.0.0.1:${running.port}`, credentials, tlsName);
    try {
      const response = await grpcJsUnary(
        client,
        "/trellis.testing.v1.TestService/InternalPing",
        InternalPingRequestSchema,
        InternalPingResponseSchema,
        create(InternalPingRequestSchema),
      );
      assert.equal(response.caller, "core");
    } finally {
      client.close();
    }
  });

  // Connect's client reports the TLS alert as internal, canceled or unavailable depending on when it
  // arrives (TLS 1.3 finishes the client's handshake before the server checks its certificate);
  // grpc-js reports every such failure as UNAVAILABLE.
  const refused = [Code.Unavailable, Code.Internal, Code.Canceled];

  test("a client without a cert is refused", async () => {
    const client = createClient(
      TestService,
      createGrpcTransport({ baseUrl, nodeOptions: { ca: pki.ca, servername: "localhost" } }),
    );
    await assert.rejects(client.echo({ text: "no cert" }), (error: unknown) => {
      assert.ok(refused.includes(ConnectError.from(error).code));
      return true;
    });
    const stock = new grpc.Client(
      `127.0.0.1:${running.port}`,
      grpc.credentials.createSsl(Buffer.from(pki.ca)),
      tlsName,
    );
    try {
      await assert.rejects(
        grpcJsUnary(
          stock,
          echoPath,
          EchoRequestSchema,
          EchoResponseSchema,
          create(EchoRequestSchema, { text: "x" }),
        ),
        (error: grpc.ServiceError) => {
          assert.equal(error.code, grpc.status.UNAVAILABLE);
          return true;
        },
      );
    } finally {
      stock.close();
    }
  });

  test("a client with a cert from another CA is refused", async () => {
    const stranger = await pki.issue("core", { ca: "other" });
    const client = createClient(
      TestService,
      createGrpcTransport({ baseUrl, nodeOptions: { ca: pki.ca, servername: "localhost", ...stranger } }),
    );
    await assert.rejects(client.echo({ text: "wrong ca" }), (error: unknown) => {
      assert.ok(refused.includes(ConnectError.from(error).code));
      return true;
    });
  });
});
