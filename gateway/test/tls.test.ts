import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { BillingService } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { createTestIssuer, type TestIssuer } from "@trellis/kit/test-tokens.js";
import { createTestPki, type TestPki } from "../../packages/kit/test/support/pki.js";
import {
  allPermissions,
  everywhere,
  type StubBackend,
  startStubBackend,
  startTestGateway,
} from "./support/harness.js";

describe("mTLS to the services", () => {
  let pki: TestPki;
  let issuer: TestIssuer;
  let core: StubBackend;
  let gateway: Awaited<ReturnType<typeof startTestGateway>>;
  let auth: { headers: Record<string, string> };

  before(async () => {
    pki = await createTestPki();
    issuer = await createTestIssuer();
    core = await startStubBackend("core", issuer, { tls: { ...(await pki.issue("core")), ca: pki.ca } });
    // Every upstream points at core's instance: only core's own identity matches its certificate.
    gateway = await startTestGateway(
      issuer,
      everywhere(core.url),
      {},
      { tls: { ...(await pki.issue("gateway")), ca: pki.ca } },
    );
    auth = { headers: { authorization: `Bearer ${await issuer.sign({ perms: allPermissions })}` } };
  });
  after(async () => {
    await gateway?.close();
    await core?.close();
    await issuer?.close();
    await pki?.dispose();
  });

  test("calls reach the service over mTLS, which sees the gateway's identity", async () => {
    for (const transport of [
      createConnectTransport({ baseUrl: gateway.baseUrl, httpVersion: "1.1" }),
      createGrpcWebTransport({ baseUrl: gateway.baseUrl, httpVersion: "1.1" }),
    ]) {
      let caller = "";
      await createClient(CoreService, transport).getOrder(
        { orderId: "o" },
        { ...auth, onHeader: (h) => (caller = h.get("x-stub-caller") ?? "") },
      );
      assert.equal(caller, "gateway");
    }
  });

  test("an instance whose certificate names another service is refused", async () => {
    const billing = createClient(
      BillingService,
      createConnectTransport({ baseUrl: gateway.baseUrl, httpVersion: "1.1" }),
    );
    await assert.rejects(
      billing.listPlans({}, auth),
      (e: unknown) => ConnectError.from(e).code === Code.Unavailable,
    );
    assert.equal(core.calls.filter((c) => c.method === "ListPlans").length, 0);
  });
});
