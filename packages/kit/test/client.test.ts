import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createSecureServer, createServer, type Http2Server, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { Code, ConnectError, type ConnectRouter, createClient, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { TestService } from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import { createServiceClient, withBearer } from "../src/client.js";
import { createServerTracingInterceptor, createTracing } from "../src/tracing.js";

type Server = { url: string; close(): Promise<void> };

/** Serves routes on port 0 (h2c, or TLS with client certificates when tls is given). */
async function serve(
  routes: (router: ConnectRouter) => void,
  options: { interceptors?: Interceptor[]; tls?: { key: Buffer; cert: Buffer; ca: Buffer } } = {},
): Promise<Server> {
  const handler = connectNodeAdapter({ routes, interceptors: options.interceptors ?? [] });
  const server: Http2Server = options.tls
    ? createSecureServer({ ...options.tls, requestCert: true, rejectUnauthorized: true }, handler)
    : createServer(handler);
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}

function codeOf(error: unknown): Code {
  return ConnectError.from(error).code;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

describe("createServiceClient", () => {
  // Each method fails with Unavailable while failures remain; calls counts what reached the server.
  const calls = { echo: 0, internalPing: 0, whoami: 0 };
  let failures = 0;
  const seenTimeouts: Array<number | undefined> = [];
  const seenAuthorization: string[] = [];
  let server: Server;

  before(async () => {
    const flaky = () => {
      if (failures > 0) {
        failures--;
        throw new ConnectError("try again", Code.Unavailable);
      }
    };
    server = await serve((router) =>
      router.service(TestService, {
        echo(req, ctx) {
          calls.echo++;
          seenAuthorization.push(ctx.requestHeader.get("authorization") ?? "");
          flaky();
          return { text: req.text };
        },
        internalPing() {
          calls.internalPing++;
          flaky();
          return { caller: "" };
        },
        whoami() {
          calls.whoami++;
          throw new ConnectError("broken", Code.Internal);
        },
        async sleep(req, ctx) {
          seenTimeouts.push(ctx.timeoutMs());
          await sleep(req.millis, ctx.signal);
          return { sleptMillis: req.millis };
        },
      }),
    );
  });
  after(() => server.close());
  beforeEach(() => {
    calls.echo = calls.internalPing = calls.whoami = 0;
    failures = 0;
    seenTimeouts.length = 0;
    seenAuthorization.length = 0;
  });

  it("retries an idempotent method that answered unavailable", async () => {
    const { client, close } = createServiceClient(TestService, { baseUrl: server.url, baseDelayMs: 5 });
    try {
      failures = 2;
      const res = await client.echo({ text: "hi" });
      assert.equal(res.text, "hi");
      assert.equal(calls.echo, 3);
    } finally {
      close();
    }
  });

  it("gives up after maxRetries", async () => {
    const { client, close } = createServiceClient(TestService, {
      baseUrl: server.url,
      baseDelayMs: 5,
      maxRetries: 2,
    });
    try {
      failures = 100;
      await assert.rejects(client.echo({ text: "hi" }), (e) => codeOf(e) === Code.Unavailable);
      assert.equal(calls.echo, 3);
    } finally {
      close();
    }
  });

  it("never retries a method that may have side effects", async () => {
    const { client, close } = createServiceClient(TestService, { baseUrl: server.url, baseDelayMs: 5 });
    try {
      failures = 1;
      await assert.rejects(client.internalPing({}), (e) => codeOf(e) === Code.Unavailable);
      assert.equal(calls.internalPing, 1);
    } finally {
      close();
    }
  });

  it("retries no code but unavailable", async () => {
    const { client, close } = createServiceClient(TestService, { baseUrl: server.url, baseDelayMs: 5 });
    try {
      await assert.rejects(client.whoami({}), (e) => codeOf(e) === Code.Internal);
      assert.equal(calls.whoami, 1);
    } finally {
      close();
    }
  });

  it("stops retrying when the retry budget is spent", async () => {
    const { client, close } = createServiceClient(TestService, {
      baseUrl: server.url,
      baseDelayMs: 5,
      budgetTokens: 4,
    });
    try {
      failures = 100;
      // 4 tokens: the first failure leaves 3 (> half, retry), the second 2 (not > half, stop).
      await assert.rejects(client.echo({ text: "a" }), (e) => codeOf(e) === Code.Unavailable);
      assert.equal(calls.echo, 2);
      await assert.rejects(client.echo({ text: "b" }), (e) => codeOf(e) === Code.Unavailable);
      assert.equal(calls.echo, 3);
    } finally {
      close();
    }
  });

  it("sends every call with a deadline the server sees", async () => {
    const { client, close } = createServiceClient(TestService, {
      baseUrl: server.url,
      defaultTimeoutMs: 3000,
    });
    try {
      await client.sleep({ millis: 0 });
      await client.sleep({ millis: 0 }, { timeoutMs: 700 });
      const [byDefault, explicit] = seenTimeouts;
      assert.ok(byDefault !== undefined && byDefault > 0 && byDefault <= 3000, `default: ${byDefault}`);
      assert.ok(explicit !== undefined && explicit > 0 && explicit <= 700, `explicit: ${explicit}`);
    } finally {
      close();
    }
  });

  it("fails a call that outlives its deadline with deadline_exceeded", async () => {
    const { client, close } = createServiceClient(TestService, { baseUrl: server.url });
    try {
      await assert.rejects(
        client.sleep({ millis: 30_000 }, { timeoutMs: 100 }),
        (e) => codeOf(e) === Code.DeadlineExceeded,
      );
    } finally {
      close();
    }
  });

  it("caps a handler's outgoing call by the handler's remaining deadline", async () => {
    const tracing = createTracing({ service: "middle" });
    const downstream = createServiceClient(TestService, { baseUrl: server.url, defaultTimeoutMs: 60_000 });
    const middle = await serve(
      (router) =>
        router.service(TestService, {
          async sleep(req) {
            return downstream.client.sleep(req);
          },
        }),
      { interceptors: [createServerTracingInterceptor(tracing.tracer)] },
    );
    const { client, close } = createServiceClient(TestService, { baseUrl: middle.url });
    try {
      await client.sleep({ millis: 0 }, { timeoutMs: 800 });
      const [seen] = seenTimeouts;
      assert.ok(seen !== undefined && seen > 0 && seen <= 800, `downstream saw ${seen}`);
    } finally {
      close();
      downstream.close();
      await middle.close();
    }
  });

  it("forwards a bearer token", async () => {
    const { client, close } = createServiceClient(TestService, { baseUrl: server.url });
    try {
      await client.echo({ text: "x" }, withBearer("token-123"));
      await client.echo({ text: "y" }, withBearer(undefined));
      assert.deepEqual(seenAuthorization, ["Bearer token-123", ""]);
    } finally {
      close();
    }
  });
});

describe("createServiceClient over mTLS", () => {
  let dir: string;
  let pem: (name: string) => Buffer;
  let server: Server;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "trellis-client-tls-"));
    const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "1",
      "-subj",
      "/CN=test-ca",
    );
    for (const name of ["server", "client"]) {
      openssl("req", "-new", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
      writeFileSync(
        join(dir, `${name}.ext`),
        `subjectAltName=URI:spiffe://trellis.local/ns/trellis/sa/${name},DNS:localhost,IP:127.0.0.1\n`,
      );
      openssl(
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        `${name}.pem`,
        "-days",
        "1",
        "-extfile",
        `${name}.ext`,
      );
    }
    pem = (name) => readFileSync(join(dir, name));
    server = await serve((router) => router.service(TestService, { echo: (req) => ({ text: req.text }) }), {
      tls: { key: pem("server.key"), cert: pem("server.pem"), ca: pem("ca.pem") },
    });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("calls with its client certificate and checks the server's SPIFFE id", async () => {
    const tls = { cert: pem("client.pem"), key: pem("client.key"), ca: pem("ca.pem") };
    const good = createServiceClient(TestService, {
      baseUrl: server.url,
      tls: { ...tls, serverIdentity: "spiffe://trellis.local/ns/trellis/sa/server" },
    });
    const impostor = createServiceClient(TestService, {
      baseUrl: server.url,
      maxRetries: 0,
      tls: { ...tls, serverIdentity: "spiffe://trellis.local/ns/trellis/sa/billing" },
    });
    try {
      assert.equal((await good.client.echo({ text: "secure" })).text, "secure");
      // connect-node reports a failed TLS handshake as internal, which is never retried.
      await assert.rejects(impostor.client.echo({ text: "x" }), (e) => codeOf(e) === Code.Internal);
    } finally {
      good.close();
      impostor.close();
    }
  });

  it("is refused by a server that requires a client certificate when it has none", async () => {
    // A plain transport trusting the CA but presenting no certificate: only the server can refuse it.
    const client = createClient(
      TestService,
      createGrpcTransport({ baseUrl: server.url, nodeOptions: { ca: pem("ca.pem") } }),
    );
    const error = await client.echo({ text: "x" }).then(
      () => assert.fail("expected a refusal"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(error.code, Code.Internal);
    assert.match(String((error.cause as { code?: string } | undefined)?.code), /CERTIFICATE_REQUIRED/);
  });
});
