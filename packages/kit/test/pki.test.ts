import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { test } from "node:test";
import { createTestPki } from "./support/pki.js";

// The mTLS tests issue several certificates at once; with a shared serial file, openssl runs
// racing on it failed ("Unable to load number from ca.srl"), which once failed CI.
test("the test PKI issues many certificates at once, each with its own serial", async () => {
  const pki = await createTestPki();
  try {
    const pairs = await Promise.all(Array.from({ length: 12 }, (_, i) => pki.issue(`svc-${i}`)));
    const serials = new Set(pairs.map((p) => new X509Certificate(p.cert).serialNumber));
    assert.equal(serials.size, 12);
  } finally {
    await pki.dispose();
  }
});
