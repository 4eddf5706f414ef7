import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { eventually, startNatsServer, type TestNatsServer, uniqueName } from "@trellis/kit/testing.js";
import type { CrashPoint } from "../src/config.js";
import { chargeKey } from "../src/ids.js";
import {
  coreEnv,
  createHarness,
  type Harness,
  orderReaches,
  productWithStock,
  sagaSettles,
} from "./support/harness.js";
import { spawnService } from "./support/process.js";
import { type ScriptedBilling, startScriptedBilling } from "./support/scripted-billing.js";

type Flow = "charge ok" | "card declined" | "cancel after confirm";

// Each case: where the process dies and which path the saga was on.
const cases: ReadonlyArray<{ point: CrashPoint; flow: Flow; expect: OrderStatus }> = [
  { point: "reserve", flow: "charge ok", expect: OrderStatus.CONFIRMED },
  { point: "charge-attempt", flow: "charge ok", expect: OrderStatus.CONFIRMED },
  { point: "charge-response", flow: "charge ok", expect: OrderStatus.CONFIRMED },
  { point: "charge", flow: "charge ok", expect: OrderStatus.CONFIRMED },
  { point: "confirm", flow: "charge ok", expect: OrderStatus.CONFIRMED },
  { point: "charge-response", flow: "card declined", expect: OrderStatus.FAILED },
  { point: "charge", flow: "card declined", expect: OrderStatus.FAILED },
  { point: "release", flow: "card declined", expect: OrderStatus.FAILED },
  { point: "refund-response", flow: "cancel after confirm", expect: OrderStatus.CANCELLED },
  { point: "refund", flow: "cancel after confirm", expect: OrderStatus.CANCELLED },
  { point: "release", flow: "cancel after confirm", expect: OrderStatus.CANCELLED },
];

describe("core killed (SIGKILL) right after each saga step, then a fresh instance on the same database", () => {
  let nats: TestNatsServer;
  let harness: Harness;
  let billing: ScriptedBilling;

  before(async () => {
    nats = await startNatsServer("/usr/sbin/nats-server");
    harness = await createHarness();
    billing = await startScriptedBilling();
  });

  after(async () => {
    await harness?.close();
    await billing?.close();
    await nats?.dispose();
  });

  for (const { point, flow, expect } of cases) {
    test(`killed after "${point}" (${flow}): resumed or compensated, invariants hold`, async () => {
      billing.script = flow === "card declined" ? { charge: () => "decline" } : {};
      const tenant = uniqueName("tenant");
      const child = await spawnService("services/core/src/main.ts", {
        ...coreEnv(harness.issuer, billing.url),
        DATABASE_URL: harness.db.url,
        NATS_URL: nats.url,
        JWKS_URL: harness.jwksUrl,
        CORE_SAGA_CRASH_AFTER: point,
      });
      let orderId = "";
      try {
        const client = await harness.client(child.baseUrl, tenant);
        await eventually(() => client.listProducts({}).then(() => true), {
          timeoutMs: 30_000,
          what: "core to start",
        });
        const productId = await productWithStock(client, uniqueName("SKU"), 1000n, 3);
        const place = client.createOrder({
          items: [{ productId, quantity: 2 }],
          paymentMethod: "pm_card_visa",
          idempotencyKey: uniqueName("key"),
        });
        if (flow === "cancel after confirm") {
          const placed = await place;
          orderId = placed.order?.orderId ?? "";
          await orderReaches(client, orderId, [OrderStatus.CONFIRMED]);
          await client.cancelOrder({ orderId, reason: "crash test" }).catch(() => undefined);
        } else {
          await place.catch(() => undefined);
        }
        assert.equal(await child.exited, "SIGKILL", child.output());
      } finally {
        child.kill();
      }
      const [row] = await harness.sql<
        { order_id: string }[]
      >`select order_id from orders where tenant_id = ${tenant}`;
      orderId = row?.order_id ?? "";
      assert.ok(orderId, "the order was persisted before the crash");

      const { instance } = await harness.start({ natsUrl: nats.url, billingUrl: billing.url });
      try {
        const client = await harness.client(instance.baseUrl, tenant);
        // A cancelled order stays CONFIRMED until its compensations are done: wait for the saga.
        await sagaSettles(harness.sql, orderId);
        const final = (await client.getOrder({ orderId })).order;
        assert.ok(final);
        assert.equal(final.status, expect);
        // Never a second charge for the order's key.
        assert.ok([...billing.charges.values()].filter((c) => c.key === chargeKey(orderId)).length <= 1);
        const kept = billing.kept(chargeKey(orderId)).length;
        const productId = final.items[0]?.productId ?? "";
        const { stock } = await client.getStock({ productId });
        const [held] = await harness.sql<{ n: number }[]>`
          select count(*)::int as n from reservations where order_id = ${orderId} and status = 'held'`;
        assert.equal(held?.n, 0, "no reservation is left to expire");
        assert.equal(stock?.onHand, 3n);
        if (final.status === OrderStatus.CONFIRMED) {
          // Confirmed only with the payment kept, and the units held for it.
          assert.equal(kept, 1);
          assert.equal(final.paymentId, billing.kept(chargeKey(orderId))[0]?.chargeId);
          assert.equal(stock?.reserved, 2n);
        } else {
          // Failed or cancelled: no money kept, no stock held.
          assert.equal(kept, 0);
          assert.equal(stock?.reserved, 0n);
        }
      } finally {
        await instance.close();
      }
    });
  }
});
