import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { type DescFile, getOption, hasOption } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { access } from "@trellis/gen/trellis/common/v1/options_pb.js";
import { createPasswordHasher } from "../src/passwords.ts";
import {
  builtInRoleNames,
  builtInRoles,
  permissionCatalog,
  testOnlyPermissions,
} from "../src/permissions.ts";
import { clientInfo } from "../src/request.ts";
import { createSealer, newRecoveryCodes, recoveryCodeHash } from "../src/secrets.ts";
import { base32Decode, base32Encode, matchTotp, totpCode, totpStep } from "../src/totp.ts";

describe("TOTP (RFC 6238) and base32 (RFC 4648)", () => {
  // RFC 6238 appendix B, SHA1 seed "12345678901234567890": the 8-digit codes end in these 6 digits.
  const secret = base32Encode(Buffer.from("12345678901234567890"));
  const vectors: Array<[number, string]> = [
    [59, "287082"],
    [1111111109, "081804"],
    [1111111111, "050471"],
    [1234567890, "005924"],
    [2000000000, "279037"],
    [20000000000, "353130"],
  ];
  for (const [time, code] of vectors) {
    test(`T=${time}s → ${code}`, () => assert.equal(totpCode(secret, totpStep(time * 1000)), code));
  }

  test("base32 matches RFC 4648 examples and round-trips", () => {
    const examples: Array<[string, string]> = [
      ["", ""],
      ["f", "MY"],
      ["fo", "MZXQ"],
      ["foo", "MZXW6"],
      ["foob", "MZXW6YQ"],
      ["fooba", "MZXW6YTB"],
      ["foobar", "MZXW6YTBOI"],
    ];
    for (const [plain, encoded] of examples) {
      assert.equal(base32Encode(Buffer.from(plain)), encoded);
      assert.equal(base32Decode(`${encoded.toLowerCase()}===`).toString(), plain);
    }
    assert.throws(() => base32Decode("01"));
  });

  test("matchTotp accepts the previous, current and next step only", () => {
    const now = 1_700_000_000_000;
    const step = totpStep(now);
    for (const offset of [-1, 0, 1])
      assert.equal(matchTotp(secret, totpCode(secret, step + offset), now), step + offset);
    assert.equal(matchTotp(secret, totpCode(secret, step + 2), now), undefined);
    assert.equal(matchTotp(secret, "12345", now), undefined);
  });
});

describe("secrets", () => {
  test("sealed secrets open only with the same key and context", () => {
    const key = Buffer.alloc(32, 1);
    const sealer = createSealer(key);
    const sealed = sealer.seal("top secret", "kid-1");
    assert.match(sealed, /^v1\./);
    assert.ok(!sealed.includes("top secret"));
    assert.equal(sealer.open(sealed, "kid-1"), "top secret");
    assert.throws(() => sealer.open(sealed, "kid-2"));
    assert.throws(() => createSealer(Buffer.alloc(32, 2)).open(sealed, "kid-1"));
    assert.throws(() => createSealer(undefined).open(sealed, "kid-1"));
    assert.equal(createSealer(undefined).open(createSealer(undefined).seal("x", "c"), "c"), "x");
  });

  test("recovery codes are distinct and compare without case or hyphens", () => {
    const codes = newRecoveryCodes();
    assert.equal(new Set(codes).size, 10);
    for (const code of codes) assert.match(code, /^[A-Z2-9]{5}-[A-Z2-9]{5}$/);
    const [first] = codes;
    assert.deepEqual(
      recoveryCodeHash(first ?? ""),
      recoveryCodeHash((first ?? "").replace("-", "").toLowerCase()),
    );
  });
});

describe("roles and permissions", () => {
  test("the catalog holds every permission the contracts name, and owner holds them all", async () => {
    const root = new URL("../../../gen/trellis/", import.meta.url);
    const named = new Set<string>();
    for (const area of readdirSync(root)) {
      for (const file of readdirSync(new URL(`${area}/v1/`, root))) {
        if (!file.endsWith("_pb.ts")) continue;
        const mod = (await import(new URL(`${area}/v1/${file}`, root).href)) as Record<string, unknown>;
        for (const value of Object.values(mod)) {
          const desc = value as DescFile;
          if (desc?.kind !== "file") continue;
          for (const service of desc.services) {
            for (const method of service.methods) {
              if (hasOption(method, access) && getOption(method, access).permission) {
                named.add(getOption(method, access).permission);
              }
            }
          }
        }
      }
    }
    assert.ok(named.size > 10);
    assert.deepEqual([...named].sort(), [...permissionCatalog].sort());
    const withTest = builtInRoles(true);
    assert.deepEqual(withTest.get("owner")?.permissions, [...permissionCatalog].sort());
    const production = builtInRoles(false);
    for (const perm of testOnlyPermissions) {
      for (const role of production.values())
        assert.ok(!role.permissions.includes(perm), `${role.name} has ${perm}`);
    }
    assert.deepEqual([...production.keys()], [...builtInRoleNames]);
    for (const role of production.values()) {
      for (const perm of role.permissions) assert.ok(production.get("owner")?.permissions.includes(perm));
    }
  });
});

describe("client address", () => {
  const cases: Array<[string | null, number, string]> = [
    ["203.0.113.5", 1, "203.0.113.5"],
    ["6.6.6.6, 203.0.113.5", 1, "203.0.113.5"],
    ["6.6.6.6, 203.0.113.5, 10.0.0.1", 2, "203.0.113.5"],
    ["2001:db8::1", 1, "2001:db8::1"],
    ["not-an-ip", 1, ""],
    ["203.0.113.5", 0, ""],
    [null, 1, ""],
    ["203.0.113.5", 3, ""],
  ];
  for (const [header, hops, expected] of cases) {
    test(`x-forwarded-for ${JSON.stringify(header)} with ${hops} trusted hop(s) → ${JSON.stringify(expected)}`, () => {
      const headers = new Headers(header === null ? {} : { "x-forwarded-for": header });
      assert.equal(clientInfo(headers, hops).ipAddress, expected);
    });
  }
});

describe("password hasher", () => {
  test("argon2id hashes verify; an unknown account (no hash) never verifies", async () => {
    const hasher = await createPasswordHasher({ concurrency: 1 });
    const hash = await hasher.hash("a long enough password");
    assert.match(hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    assert.equal(await hasher.verify(hash, "a long enough password"), true);
    assert.equal(await hasher.verify(hash, "another password"), false);
    assert.equal(await hasher.verify(undefined, "dummy password for unknown accounts"), false);
  });

  test("hashing threads run at the nice value asked for (Linux)", {
    skip: process.platform !== "linux",
  }, async () => {
    const niceOfThreads = () =>
      readdirSync("/proc/self/task").map((tid) => {
        // Field 19 of stat is the nice value; the command name (field 2) may hold spaces.
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
      });
    assert.ok(!niceOfThreads().includes(7), "no thread runs at 7 before");
    const hasher = await createPasswordHasher({ concurrency: 1, nice: 7 });
    try {
      await hasher.hash("a long enough password");
      assert.ok(niceOfThreads().includes(7), `thread nice values: ${niceOfThreads().join(" ")}`);
    } finally {
      await hasher.close();
    }
  });

  test("at most `concurrency` hashes run; beyond the queue a caller gets resource_exhausted", async () => {
    const hasher = await createPasswordHasher({ concurrency: 1, maxQueue: 2 });
    const running = [
      hasher.hash("one one one one"),
      hasher.hash("two two two two"),
      hasher.hash("three three three"),
    ];
    assert.deepEqual(hasher.load, { running: 1, waiting: 2 });
    await assert.rejects(
      hasher.hash("four four four four"),
      (e) => ConnectError.from(e).code === Code.ResourceExhausted,
    );
    await Promise.all(running);
    assert.deepEqual(hasher.load, { running: 0, waiting: 0 });
  });
});
