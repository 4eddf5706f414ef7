import assert from "node:assert/strict";
import { createServer, type Http2Server, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  create,
  createFileRegistry,
  type DescMessage,
  getOption,
  hasOption,
  type MessageInitShape,
  setExtension,
} from "@bufbuild/protobuf";
import { nestedTypes, pathToString } from "@bufbuild/protobuf/reflect";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldOptionsSchema,
  FileDescriptorProtoSchema,
  timestampFromDate,
} from "@bufbuild/protobuf/wkt";
import { pathFromViolationProto } from "@bufbuild/protovalidate";
import {
  type FieldRules,
  FieldRulesSchema,
  field as fieldRules,
  ViolationsSchema,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { RE2JS } from "@bufbuild/re2";
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { file_trellis_analytics_v1_analytics } from "@trellis/gen/trellis/analytics/v1/analytics_pb.js";
import { file_trellis_auth_v1_auth } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { file_trellis_billing_v1_billing } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { file_trellis_core_v1_core } from "@trellis/gen/trellis/core/v1/core_pb.js";
import {
  EchoRequestSchema,
  file_trellis_testing_v1_testing,
  TestService,
} from "@trellis/gen/trellis/testing/v1/testing_pb.js";
import { createValidationInterceptor, regexMatch, runsLikeRe2 } from "../src/validation.ts";

interface TestServer {
  readonly baseUrl: string;
  readonly calls: Map<string, number>;
  close(): Promise<void>;
}

/** A real connect-node server over h2c on port 0 serving TestService, counting handler calls. */
async function startServer(interceptors: Interceptor[]): Promise<TestServer> {
  const calls = new Map<string, number>();
  const hit = (name: string) => calls.set(name, (calls.get(name) ?? 0) + 1);
  const handler = connectNodeAdapter({
    interceptors,
    routes(router) {
      router.service(TestService, {
        echo(req) {
          hit("echo");
          return { text: req.text.repeat(Math.max(1, req.repeat)) };
        },
        whoami() {
          hit("whoami");
          return {};
        },
        internalPing() {
          hit("internalPing");
          return {};
        },
        sleep(req) {
          hit("sleep");
          return { sleptMillis: req.millis };
        },
        async *count(req) {
          hit("count");
          for (let value = 1; value <= req.n; value++) yield { value };
        },
      });
    },
  });
  const server: Http2Server = createServer(handler);
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    async close() {
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The field paths named by the error's buf.validate.Violations detail, in order. */
function violationPaths(error: ConnectError, schema: DescMessage): string[] {
  const details = error.findDetails(ViolationsSchema);
  assert.equal(details.length, 1, "exactly one Violations detail");
  return (details[0]?.violations ?? []).map((v) => {
    assert.ok(v.field, "violation names a field");
    return pathToString(pathFromViolationProto(schema, v.field));
  });
}

async function expectCode(promise: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    const e = ConnectError.from(error);
    assert.equal(e.code, code, `expected ${Code[code]}, got ${Code[e.code]}: ${e.message}`);
    return e;
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

const future = () => timestampFromDate(new Date(Date.now() + 3_600_000));
const past = () => timestampFromDate(new Date(Date.now() - 3_600_000));

// Every case sets a valid email, so each breaks exactly the one rule it names.
const ok = { text: "hi", email: "a@example.com" };
const invalidEchos: Array<[string, MessageInitShape<typeof EchoRequestSchema>, string]> = [
  ["text empty", { ...ok, text: "" }, "text"],
  ["text too long", { ...ok, text: "x".repeat(1001) }, "text"],
  ["bad email", { ...ok, email: "not-an-email" }, "email"],
  ["repeat above range", { ...ok, repeat: 11 }, "repeat"],
  ["repeat below range", { ...ok, repeat: -1 }, "repeat"],
  ["too many tags", { ...ok, tags: ["a", "b", "c", "d", "e", "f"] }, "tags"],
  ["tag too long", { ...ok, tags: ["ok", "x".repeat(21)] }, "tags[1]"],
  ["tag empty", { ...ok, tags: [""] }, "tags[0]"],
  ["timestamp in the future", { ...ok, at: future() }, "at"],
];

for (const [protocol, makeTransport] of [
  ["grpc", (baseUrl: string) => createGrpcTransport({ baseUrl })],
  ["connect", (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "2" })],
] as Array<[string, (baseUrl: string) => Transport]>) {
  describe(`validation interceptor over ${protocol}`, () => {
    let server: TestServer;
    let client: Client<typeof TestService>;
    before(async () => {
      server = await startServer([createValidationInterceptor()]);
      client = createClient(TestService, makeTransport(server.baseUrl));
    });
    after(() => server.close());

    for (const [name, input, path] of invalidEchos) {
      it(`rejects ${name} naming ${path}, without calling the handler`, async () => {
        const before = server.calls.get("echo") ?? 0;
        const error = await expectCode(client.echo(input), Code.InvalidArgument);
        assert.deepEqual(violationPaths(error, EchoRequestSchema), [path]);
        assert.equal(server.calls.get("echo") ?? 0, before, "handler not called");
      });
    }

    it("reports one violation per broken rule", async () => {
      const before = server.calls.get("echo") ?? 0;
      const error = await expectCode(
        client.echo({ ...ok, text: "", repeat: 42, tags: ["x".repeat(21)] }),
        Code.InvalidArgument,
      );
      assert.deepEqual(violationPaths(error, EchoRequestSchema).sort(), ["repeat", "tags[0]", "text"]);
      assert.equal(server.calls.get("echo") ?? 0, before);
    });

    it("passes valid input to the handler", async () => {
      const before = server.calls.get("echo") ?? 0;
      const res = await client.echo({
        text: "ab",
        email: "someone@example.com",
        repeat: 2,
        tags: ["one", "x".repeat(20)],
        at: past(),
      });
      assert.equal(res.text, "abab");
      assert.equal(server.calls.get("echo"), before + 1);
    });

    it("passes an EchoRequest whose optional email is unset", async () => {
      assert.equal((await client.echo({ text: "hi" })).text, "hi");
    });

    it("passes messages without rules", async () => {
      await client.whoami({});
      await client.internalPing({});
    });

    it("checks a server-streaming request before the handler runs", async () => {
      const before = server.calls.get("count") ?? 0;
      const error = await expectCode(
        (async () => {
          for await (const _ of client.count({ n: 0 })) {
            // drain
          }
        })(),
        Code.InvalidArgument,
      );
      assert.deepEqual(violationPaths(error, TestService.method.count.input), ["n"]);
      assert.equal(server.calls.get("count") ?? 0, before);
      const values: number[] = [];
      for await (const r of client.count({ n: 3 })) values.push(r.value);
      assert.deepEqual(values, [1, 2, 3]);
    });
  });
}

describe("validation interceptor with rules that do not compile", () => {
  it("answers internal and never calls next", async () => {
    // An int32 field carrying string rules: protovalidate refuses to compile it.
    const options = create(FieldOptionsSchema);
    setExtension(
      options,
      fieldRules,
      create(FieldRulesSchema, { type: { case: "string", value: { minLen: 1n } } }),
    );
    const registry = createFileRegistry(
      create(FileDescriptorProtoSchema, {
        name: "broken.proto",
        package: "broken.v1",
        syntax: "proto3",
        messageType: [
          {
            name: "Broken",
            field: [
              {
                name: "n",
                number: 1,
                type: FieldDescriptorProto_Type.INT32,
                label: FieldDescriptorProto_Label.OPTIONAL,
                jsonName: "n",
                options,
              },
            ],
          },
        ],
      }),
      () => undefined,
    );
    const schema = registry.getMessage("broken.v1.Broken");
    assert.ok(schema);
    let nextCalled = false;
    const next = createValidationInterceptor()(async () => {
      nextCalled = true;
      throw new Error("unreachable");
    });
    const req = {
      stream: false,
      message: create(schema, {}),
      method: { ...TestService.method.echo, input: schema },
    } as unknown as Parameters<typeof next>[0];
    await expectCode(next(req), Code.Internal);
    assert.equal(nextCalled, false);
  });
});

describe("regex matching for pattern rules", () => {
  // Every string pattern declared in the contracts (fields, map keys and values, repeated items).
  const contractPatterns = (): string[] => {
    const found = new Set<string>();
    const files = [
      file_trellis_analytics_v1_analytics,
      file_trellis_auth_v1_auth,
      file_trellis_billing_v1_billing,
      file_trellis_core_v1_core,
      file_trellis_testing_v1_testing,
    ];
    const collect = (rules: FieldRules | undefined) => {
      if (!rules) return;
      const t = rules.type;
      if (t.case === "string" && t.value.pattern) found.add(t.value.pattern);
      if (t.case === "map") {
        collect(t.value.keys);
        collect(t.value.values);
      }
      if (t.case === "repeated") collect(t.value.items);
    };
    for (const file of files) {
      for (const message of nestedTypes(file)) {
        if (message.kind !== "message") continue;
        for (const field of message.fields) {
          if (hasOption(field, fieldRules)) collect(getOption(field, fieldRules));
        }
      }
    }
    return [...found];
  };
  const probes = [
    "",
    "a",
    "A",
    "a1",
    "1a",
    "a.b",
    "a.b.c",
    "a.b.c.d",
    "a.b.c.d.e",
    "a..b",
    "a.",
    "a-b",
    "a_b",
  ];
  probes.push(
    "a:b",
    "a b",
    "é",
    "ab\n",
    "abc-DEF_1.2:3",
    "x".repeat(40),
    "x".repeat(65),
    "x".repeat(101),
    "A-1",
  );

  it("answers as RE2 does for every pattern in the contracts", () => {
    const patterns = contractPatterns();
    assert.ok(patterns.length >= 5, `found ${patterns.length} patterns`);
    for (const pattern of patterns) {
      const re2 = RE2JS.compile(pattern);
      for (const text of probes) {
        assert.equal(regexMatch(pattern, text), re2.test(text), `${pattern} on ${JSON.stringify(text)}`);
      }
    }
  });

  it("uses the platform RegExp only for patterns it runs like RE2", () => {
    for (const safe of [
      "^[a-zA-Z][a-zA-Z0-9_.:-]{0,63}$",
      "^[A-Za-z0-9-]+$",
      "^(?:ab)+$",
      "^a|b$",
      "^[(]a+[)]+$",
    ]) {
      assert.equal(runsLikeRe2(safe), true, safe);
    }
    for (const risky of [
      "(a+)+$",
      "^(a|a)*$",
      "^((ab)*c)+$",
      "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*){1,3}$",
      "(a)\\1",
      "(?=a)a",
      "(?i)abc",
      "(?P<x>a)",
      "\\Aabc\\z",
      "[[:alpha:]]+",
      "\\pL+",
    ]) {
      assert.equal(runsLikeRe2(risky), false, risky);
    }
  });

  it("answers RE2-only syntax and backtracking shapes through RE2", () => {
    assert.equal(regexMatch("(?i)^abc$", "ABC"), true);
    assert.equal(regexMatch("^[[:digit:]]+$", "123"), true);
    // Exponential for a backtracking engine; RE2 answers at once.
    assert.equal(regexMatch("^(a+)+$", `${"a".repeat(40)}!`), false);
  });
});
