import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { IdempotencyMismatchError } from "../src/provider.ts";
import { createSandboxProvider } from "../src/sandbox-provider.ts";

// The sandbox provider is an in-memory payment provider by design (it is what `npm start` and the
// tests charge); these tests drive it directly, with a clock they move.
describe("sandbox provider idempotency keys", () => {
  const charge = (key: string, amountMinor = 1000n) => ({
    idempotencyKey: key,
    tenantId: "t1",
    amountMinor,
    currency: "USD",
    paymentMethodRef: "pm_card_visa",
    description: "",
    metadata: {},
  });

  test("a key answers its first outcome for 24 h, is forgotten after, and memory does not grow", async () => {
    let clock = Date.UTC(2026, 0, 1);
    const sandbox = createSandboxProvider({ now: () => clock });
    const first = await sandbox.charge(charge("k1"));
    assert.equal(first.status, "succeeded");
    clock += 23 * 3_600_000;
    assert.deepEqual(await sandbox.charge(charge("k1")), first, "a retry within 24 h gets the first answer");
    await assert.rejects(sandbox.charge(charge("k1", 5n)), IdempotencyMismatchError);
    assert.equal(sandbox.chargesTaken, 1);

    for (let i = 0; i < 100; i++) await sandbox.charge(charge(`bulk-${i}`));
    assert.equal(sandbox.keysHeld, 101);
    clock += 25 * 3_600_000;
    const again = await sandbox.charge(charge("k1"));
    assert.notEqual(again.providerChargeId, first.providerChargeId, "after 24 h the key is new again");
    assert.equal(sandbox.chargesTaken, 102);
    assert.equal(sandbox.keysHeld, 1, "expired keys are dropped");
  });

  test("refund keys expire the same way", async () => {
    let clock = Date.UTC(2026, 0, 1);
    const sandbox = createSandboxProvider({ now: () => clock, keyTtlMs: 60_000 });
    const paid = await sandbox.charge(charge("c1"));
    const refund = {
      idempotencyKey: "r1",
      providerChargeId: paid.providerChargeId,
      amountMinor: 100n,
      currency: "USD",
    };
    const first = await sandbox.refund(refund);
    assert.deepEqual(await sandbox.refund(refund), first);
    assert.equal(sandbox.refundsMade, 1);
    clock += 61_000;
    await sandbox.refund(refund);
    assert.equal(sandbox.refundsMade, 2, "a key past its time refunds again, as a real provider would");
  });
});
