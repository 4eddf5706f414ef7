import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ConfigError, type ConfigSource, env, kitConfigSchema, loadConfig, tlsFiles } from "../src/config.js";

function problemsOf(schema: Parameters<typeof loadConfig>[0], source: ConfigSource): ConfigError {
  try {
    loadConfig(schema, source);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected loadConfig to throw");
}

describe("loadConfig", () => {
  let dir: string;
  let pem: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "trellis-config-"));
    pem = join(dir, "cert.pem");
    await writeFile(pem, "-----BEGIN CERTIFICATE-----\n");
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads the kit's defaults from an empty environment", () => {
    const config = loadConfig(kitConfigSchema(8001), {});
    assert.equal(config.PORT, 8001);
    assert.equal(config.ADMIN_PORT, 9001);
    assert.equal(config.LOG_LEVEL, "info");
    assert.equal(config.TRUST_FORWARDED_IDENTITY, false);
    assert.equal(config.SHUTDOWN_GRACE_MS, 10_000);
    assert.equal(config.DATABASE_URL, undefined);
    assert.equal(config.OTEL_EXPORTER_OTLP_ENDPOINT, undefined);
    assert.equal(tlsFiles(config), undefined);
  });

  const derived: Array<[string, ConfigSource, number, number]> = [
    ["admin port follows PORT", { PORT: "7000" }, 7000, 8000],
    ["ephemeral PORT gives an ephemeral admin port", { PORT: "0" }, 0, 0],
    ["explicit ADMIN_PORT wins", { PORT: "7000", ADMIN_PORT: "7100" }, 7000, 7100],
    ["empty values count as unset", { PORT: "", ADMIN_PORT: "  " }, 8001, 9001],
  ];
  for (const [name, source, port, adminPort] of derived) {
    it(name, () => {
      const config = loadConfig(kitConfigSchema(8001), source);
      assert.equal(config.PORT, port);
      assert.equal(config.ADMIN_PORT, adminPort);
    });
  }

  const malformed: Array<[string, ConfigSource]> = [
    ["PORT", { PORT: "abc" }],
    ["PORT", { PORT: "70000" }],
    ["ADMIN_PORT", { ADMIN_PORT: "-1" }],
    ["LOG_LEVEL", { LOG_LEVEL: "loud" }],
    ["OTEL_EXPORTER_OTLP_ENDPOINT", { OTEL_EXPORTER_OTLP_ENDPOINT: "not a url" }],
    ["NATS_URL", { NATS_URL: "http://127.0.0.1:4222" }],
    ["DATABASE_URL", { DATABASE_URL: "mysql://db/x" }],
    ["TRUST_FORWARDED_IDENTITY", { TRUST_FORWARDED_IDENTITY: "maybe" }],
    ["SHUTDOWN_GRACE_MS", { SHUTDOWN_GRACE_MS: "soon" }],
    ["JWKS_URL", { JWKS_URL: "ftp://auth/jwks" }],
  ];
  for (const [variable, source] of malformed) {
    it(`names malformed ${variable} (${JSON.stringify(source[variable])})`, () => {
      const error = problemsOf(kitConfigSchema(8001), source);
      assert.deepEqual(
        error.problems.map((p) => p.variable),
        [variable],
      );
      assert.match(error.message, new RegExp(`\\b${variable}: `));
    });
  }

  it("names every problem at once, in one error", () => {
    const schema = { ...kitConfigSchema(8001), DATABASE_URL: env.url({ protocols: ["postgres"] }) };
    const error = problemsOf(schema, { PORT: "abc", LOG_LEVEL: "loud", SHUTDOWN_GRACE_MS: "x" });
    const named = error.problems.map((p) => p.variable).sort();
    assert.deepEqual(named, ["DATABASE_URL", "LOG_LEVEL", "PORT", "SHUTDOWN_GRACE_MS"]);
    for (const variable of named) assert.ok(error.message.includes(`${variable}: `), variable);
    assert.ok(error.message.includes("DATABASE_URL: missing"));
    assert.ok(error.message.includes("'abc'"), "the bad value of a plain variable is shown");
  });

  it("requires the TLS files all or none, naming the missing ones", () => {
    const error = problemsOf(kitConfigSchema(8001), { TLS_CERT_FILE: pem });
    assert.deepEqual(error.problems.map((p) => p.variable).sort(), ["TLS_CA_FILE", "TLS_KEY_FILE"]);
    const config = loadConfig(kitConfigSchema(8001), {
      TLS_CERT_FILE: pem,
      TLS_KEY_FILE: pem,
      TLS_CA_FILE: pem,
    });
    assert.deepEqual(tlsFiles(config), { cert: pem, key: pem, ca: pem });
  });

  it("rejects a TLS file that cannot be read", () => {
    const missing = join(dir, "nope.pem");
    const error = problemsOf(kitConfigSchema(8001), {
      TLS_CERT_FILE: missing,
      TLS_KEY_FILE: pem,
      TLS_CA_FILE: pem,
    });
    assert.deepEqual(
      error.problems.map((p) => p.variable),
      ["TLS_CERT_FILE"],
    );
  });

  it("never echoes a URL, which may carry a password", () => {
    const error = problemsOf({ DATABASE_URL: env.url() }, { DATABASE_URL: "postgres//user:hunter2@db" });
    assert.deepEqual(
      error.problems.map((p) => p.variable),
      ["DATABASE_URL"],
    );
    assert.ok(!error.message.includes("hunter2"));
  });

  const values: Array<
    [string, ReturnType<typeof env.duration> | ReturnType<typeof env.bool>, string, unknown]
  > = [
    ["duration in ms", env.duration(), "250", 250],
    ["duration with ms", env.duration(), "200ms", 200],
    ["duration in s", env.duration(), "5s", 5000],
    ["fractional duration", env.duration(), "1.5s", 1500],
    ["duration in m", env.duration(), "2m", 120_000],
    ["bool yes", env.bool(), "yes", true],
    ["bool TRUE", env.bool(), "TRUE", true],
    ["bool 0", env.bool(), "0", false],
    ["bool off", env.bool(), "off", false],
  ];
  for (const [name, spec, raw, expected] of values) {
    it(`parses ${name}`, () => {
      assert.equal(loadConfig({ X: spec }, { X: raw }).X, expected);
    });
  }

  it("bounds integers", () => {
    const schema = { N: env.int({ min: 1, max: 10 }) };
    assert.equal(loadConfig(schema, { N: "10" }).N, 10);
    for (const raw of ["0", "11", "1.5", "1e3", "ten"]) {
      assert.deepEqual(
        problemsOf(schema, { N: raw }).problems.map((p) => p.variable),
        ["N"],
        raw,
      );
    }
  });

  it("returns a frozen object typed from the schema", () => {
    const config = loadConfig(
      { NAME: env.string(), MODE: env.enum(["a", "b"]), MAYBE: env.int({ optional: true }) },
      { NAME: "x", MODE: "b" },
    );
    const mode: "a" | "b" = config.MODE;
    const maybe: number | undefined = config.MAYBE;
    assert.equal(mode, "b");
    assert.equal(maybe, undefined);
    assert.ok(Object.isFrozen(config));
    assert.throws(() => {
      (config as { NAME: string }).NAME = "y";
    }, TypeError);
  });

  it("accepts custom parsers and reports their errors", () => {
    const schema = { LIST: env.custom((raw) => raw.split(",").map((s) => Number.parseInt(s, 10))) };
    assert.deepEqual(loadConfig(schema, { LIST: "1,2" }).LIST, [1, 2]);
    const strict = {
      LIST: env.custom((raw) => {
        if (!/^\d+(,\d+)*$/.test(raw)) throw new Error("not a list of integers");
        return raw.split(",").map(Number);
      }),
    };
    assert.deepEqual(
      problemsOf(strict, { LIST: "1,,x" }).problems.map((p) => p.variable),
      ["LIST"],
    );
    const frozen = loadConfig(schema, { LIST: "3" });
    assert.ok(Object.isFrozen(frozen.LIST), "nested values are frozen too");
  });
});
