import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { TenantCreatedSchema } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { PlanInterval } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { PaymentSucceededSchema } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { eventHeaders } from "@trellis/kit/events.js";
import { ensureStream } from "@trellis/kit/nats.js";
import { eventually } from "@trellis/kit/testing.js";
import { AckPolicy, connect, type NatsConnection } from "nats";
import { createPlan, type Harness, key, newTenant, startBilling } from "./support.ts";

describe("events", () => {
  let h: Harness;
  let nc: NatsConnection;
  before(async () => {
    // auth's stream exists before billing starts, as in a running mesh.
    h = await startBilling({}, async (url) => {
      const conn = await connect({ servers: url });
      await ensureStream(await conn.jetstreamManager(), { name: "AUTH", subjects: ["trellis.auth.>"] });
      await conn.close();
    });
    nc = await connect({ servers: h.nats.url });
  });
  after(async () => {
    await nc?.close();
    await h?.close();
  });

  test("state changes reach the BILLING stream through the outbox", async () => {
    const tenant = newTenant();
    const c = await h.user(tenant);
    const plan = await createPlan(c, {
      monthly: 900n,
      metered: [{ metric: "api.calls", unitPrice: 1n, included: 0n }],
    });
    await c.attachPaymentMethod({ token: "pm_card_visa", idempotencyKey: key() });
    await c.createSubscription({ planId: plan.planId, interval: PlanInterval.MONTH, idempotencyKey: key() });
    await c.recordUsage({ metric: "api.calls", quantity: 3n, idempotencyKey: key() });
    const core = h.service("core");
    const charge = await core.charge({
      tenantId: tenant,
      amount: { amountMinor: 250n, currency: "USD" },
      idempotencyKey: key(),
      paymentMethod: "pm_card_visa",
      metadata: { order_id: "ord_9" },
    });
    await core.refund({ tenantId: tenant, chargeId: charge.charge?.chargeId ?? "", idempotencyKey: key() });
    await core.charge({
      tenantId: tenant,
      amount: { amountMinor: 1n, currency: "USD" },
      idempotencyKey: key(),
      paymentMethod: "pm_card_declined",
    });

    const jsm = await nc.jetstreamManager();
    await jsm.consumers.add("BILLING", { durable_name: "test", ack_policy: AckPolicy.None });
    const consumer = await nc.jetstream().consumers.get("BILLING", "test");
    const seen = new Map<string, number>();
    let payment: ReturnType<typeof fromBinary<typeof PaymentSucceededSchema>> | undefined;
    const expected = [
      "trellis.billing.subscription.created",
      "trellis.billing.invoice.finalized",
      "trellis.billing.invoice.paid",
      "trellis.billing.payment.succeeded",
      "trellis.billing.payment.failed",
      "trellis.billing.payment.refunded",
      "trellis.billing.usage.recorded",
    ];
    await eventually(
      async () => {
        const batch = await consumer.fetch({ max_messages: 100, expires: 1000 });
        for await (const m of batch) {
          seen.set(m.subject, (seen.get(m.subject) ?? 0) + 1);
          assert.equal(m.headers?.get("ce-source"), "trellis/billing");
          assert.equal(m.headers?.get("Nats-Msg-Id"), m.headers?.get("ce-id"));
          if (m.subject === "trellis.billing.payment.succeeded") {
            const event = fromBinary(PaymentSucceededSchema, m.data);
            if (event.chargeId === charge.charge?.chargeId) payment = event;
          }
        }
        return expected.every((s) => seen.has(s)) && payment;
      },
      { timeoutMs: 15_000, what: "billing events" },
    );
    assert.equal(payment?.metadata.order_id, "ord_9");
    assert.equal(payment?.amount?.amountMinor, 250n);
    assert.equal(payment?.tenantId, tenant);
  });

  test("trellis.auth.tenant.created creates the billing customer, once", async () => {
    const tenant = newTenant();
    const js = nc.jetstream();
    const event = create(TenantCreatedSchema, {
      tenantId: tenant,
      name: "Acme GmbH",
      ownerUserId: "u1",
      occurredAt: timestampNow(),
    });
    const id = `evt-${tenant}`;
    const headers = eventHeaders({
      id,
      type: TenantCreatedSchema.typeName,
      service: "auth",
      time: new Date(),
    });
    await js.publish("trellis.auth.tenant.created", toBinary(TenantCreatedSchema, event), { headers });
    // A redelivered copy (new message, same event id) must not apply twice.
    await js.publish("trellis.auth.tenant.created", toBinary(TenantCreatedSchema, event), {
      headers: eventHeaders({ id, type: TenantCreatedSchema.typeName, service: "auth", time: new Date() }),
      msgID: `${id}-copy`,
    });
    const name = await eventually(async () => (await h.store.customerName(tenant)) || undefined, {
      timeoutMs: 20_000,
      what: "customer row",
    });
    assert.equal(name, "Acme GmbH");
    await eventually(
      async () => {
        const rows = await h.store
          .sql`select 1 from inbox where consumer = 'billing-tenant-created' and event_id = ${id}`;
        return rows.length === 1;
      },
      { what: "inbox row" },
    );
  });
});
