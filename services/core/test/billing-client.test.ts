import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createTestPki, type KeyPair, type TestPki } from "../../../packages/kit/test/support/pki.js";
import { type BillingPort, createBillingClient } from "../src/billing.js";
import { type ScriptedBilling, startScriptedBilling } from "./support/scripted-billing.js";

const codeOf = (e: unknown) => ConnectError.from(e).code;
const charge = (port: BillingPort, key: string) =>
  port.charge(
    {
      tenantId: "t1",
      amount: { amountMinor: 500n, currency: "USD" },
      idempotencyKey: key,
      paymentMethod: "pm_card_visa",
      orderId: "ord_1",
    },
    { timeoutMs: 5000 },
  );

describe("core's billing client over mTLS", () => {
  let pki: TestPki;
  let billing: ScriptedBilling;
  let impostor: ScriptedBilling;
  let core: KeyPair;
  let gateway: KeyPair;
  const clients: BillingPort[] = [];

  before(async () => {
    pki = await createTestPki();
    const [billingCert, authCert] = await Promise.all([pki.issue("billing"), pki.issue("auth")]);
    [core, gateway] = await Promise.all([pki.issue("core"), pki.issue("gateway")]);
    billing = await startScriptedBilling({}, { tls: { ...billingCert, ca: pki.ca } });
    impostor = await startScriptedBilling({}, { tls: { ...authCert, ca: pki.ca } });
  });
  after(async () => {
    for (const c of clients) c.close();
    await billing?.close();
    await impostor?.close();
    await pki?.dispose();
  });

  const client = (baseUrl: string, pair: KeyPair) => {
    const c = createBillingClient({ baseUrl, tls: { ...pair, ca: pki.ca } });
    clients.push(c);
    return c;
  };

  test("calls billing's internal RPCs as spiffe://…/sa/core", async () => {
    const port = client(billing.url, core);
    const outcome = await charge(port, "k-core");
    assert.equal(outcome.kind, "succeeded");
    assert.equal(billing.charges.get("k-core")?.caller, "core");
    const status = await port.status("t1");
    assert.equal(status.subscription, "active");
  });

  test("another service's certificate is refused by billing's access rule", async () => {
    await assert.rejects(
      charge(client(billing.url, gateway), "k-gw"),
      (e) => codeOf(e) === Code.PermissionDenied,
    );
    assert.equal(billing.charges.has("k-gw"), false);
  });

  test("a server that is not billing is refused by the client", async () => {
    // The kit's client fails the TLS handshake (internal): the request is never sent.
    await assert.rejects(charge(client(impostor.url, core), "k-imp"), (e) => codeOf(e) === Code.Internal);
    assert.equal(impostor.charges.has("k-imp"), false);
  });
});
