import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { type CoreService, OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";
import {
  OrderCancelledSchema,
  OrderConfirmedSchema,
  OrderCreatedSchema,
  OrderFailedSchema,
  OrderFulfilledSchema,
} from "@trellis/gen/trellis/core/v1/events_pb.js";
import { eventually, startNatsServer, type TestNatsServer, uniqueName } from "@trellis/kit/testing.js";
import { chargeKey } from "../src/ids.js";
import { sagaLog } from "../src/store.js";
import { type EventTap, tapCoreEvents } from "./support/events.js";
import { type CoreFixture, startCoreFixture } from "./support/fixture.js";
import {
  createHarness,
  type Harness,
  orderReaches,
  productWithStock,
  sagaSettles,
} from "./support/harness.js";
import { type ScriptedBilling, startScriptedBilling } from "./support/scripted-billing.js";

const { CONFIRMED, FAILED, CANCELLED, FULFILLED } = OrderStatus;
const terminal = [CONFIRMED, FAILED, CANCELLED];

describe("the CreateOrder saga against a scripted billing server", () => {
  let nats: TestNatsServer;
  let harness: Harness;
  let billing: ScriptedBilling;
  let baseUrl: string;
  let tap: EventTap;

  before(async () => {
    nats = await startNatsServer("/usr/sbin/nats-server");
    harness = await createHarness();
    billing = await startScriptedBilling();
    // A short step deadline makes the "slow billing" case quick; 3 charge attempts before giving up.
    const { instance } = await harness.start({
      natsUrl: nats.url,
      billingUrl: billing.url,
      env: { CORE_SAGA_STEP_TIMEOUT: "400", CORE_SAGA_CHARGE_ATTEMPTS: "3" },
    });
    baseUrl = instance.baseUrl;
    tap = await tapCoreEvents(nats.url);
  });

  after(async () => {
    await tap?.close();
    await harness?.close();
    await billing?.close();
    await nats?.dispose();
  });

  // A fresh tenant with one product; returns a client for it.
  const setup = async (onHand: number, price = 1250n) => {
    billing.script = {};
    const tenant = uniqueName("tenant");
    const client = await harness.client(baseUrl, tenant);
    const productId = await productWithStock(client, uniqueName("SKU"), price, onHand);
    return { tenant, client, productId };
  };
  const order = (
    client: Client<typeof CoreService>,
    productId: string,
    quantity = 1,
    key = uniqueName("key"),
  ) =>
    client.createOrder({
      items: [{ productId, quantity }],
      paymentMethod: "pm_card_visa",
      idempotencyKey: key,
    });
  const stockOf = async (client: Client<typeof CoreService>, productId: string) =>
    (await client.getStock({ productId })).stock;

  test("happy path: reserve, charge once with the order's key, confirm, publish created and confirmed", async () => {
    const { client, productId } = await setup(5);
    const { order: placed } = await order(client, productId, 2);
    const orderId = placed?.orderId ?? "";
    const confirmed = await orderReaches(client, orderId, terminal);
    assert.equal(confirmed.status, CONFIRMED);
    assert.deepEqual(
      confirmed.history.map((h) => h.status),
      [OrderStatus.PENDING, OrderStatus.RESERVED, OrderStatus.PAID, CONFIRMED],
    );
    assert.equal(confirmed.total?.amountMinor, 2500n);
    const kept = billing.kept(chargeKey(orderId));
    assert.equal(kept.length, 1);
    assert.equal(kept[0]?.amountMinor, 2500n);
    assert.equal(kept[0]?.caller, "core");
    assert.equal(confirmed.paymentId, kept[0]?.chargeId);
    const stock = await stockOf(client, productId);
    assert.deepEqual([stock?.onHand, stock?.reserved, stock?.available], [5n, 2n, 3n]);
    await tap.waitFor(OrderCreatedSchema, (e) => e.orderId === orderId);
    const event = await tap.waitFor(OrderConfirmedSchema, (e) => e.orderId === orderId);
    assert.equal(event.units, 2n);
    assert.equal(event.paymentId, confirmed.paymentId);
  });

  test("a declined card fails the order with card_declined and releases the stock", async () => {
    const { client, productId } = await setup(3);
    billing.script = { charge: () => "decline" };
    const { order: placed } = await order(client, productId, 2);
    const failed = await orderReaches(client, placed?.orderId ?? "", terminal);
    assert.equal(failed.status, FAILED);
    assert.equal(failed.failureReason, "card_declined");
    const stock = await stockOf(client, productId);
    assert.deepEqual([stock?.reserved, stock?.available], [0n, 3n]);
    assert.equal(billing.kept(chargeKey(failed.orderId)).length, 0);
    const event = await tap.waitFor(OrderFailedSchema, (e) => e.orderId === failed.orderId);
    assert.equal(event.lastStatus, OrderStatus.RESERVED);
    assert.equal(event.failureReason, "card_declined");
  });

  test("insufficient funds is a failure reason of its own", async () => {
    const { client, productId } = await setup(1);
    billing.script = { charge: () => "insufficient" };
    const { order: placed } = await order(client, productId);
    const failed = await orderReaches(client, placed?.orderId ?? "", terminal);
    assert.equal(failed.failureReason, "insufficient_funds");
  });

  test("billing unavailable for a while: the charge is retried with the same key and the order confirmed", async () => {
    const { client, productId } = await setup(2);
    billing.script = { charge: (_req, n) => (n <= 2 ? "unavailable" : "ok") };
    const before = billing.calls.charge;
    const { order: placed } = await order(client, productId);
    const confirmed = await orderReaches(client, placed?.orderId ?? "", terminal);
    assert.equal(confirmed.status, CONFIRMED);
    assert.equal(billing.calls.charge - before, 3);
    assert.equal(billing.kept(chargeKey(confirmed.orderId)).length, 1);
    const log = await sagaLog(harness.sql, confirmed.orderId);
    assert.equal(log.filter((l) => l.step === "charge" && l.outcome === "retry").length, 2);
  });

  test("billing unavailable beyond the attempts: the order fails, stock is released, the charge is resolved later", async () => {
    const { client, productId } = await setup(2);
    billing.script = { charge: () => "unavailable" };
    const { order: placed } = await order(client, productId, 2);
    const orderId = placed?.orderId ?? "";
    const failed = await orderReaches(client, orderId, terminal);
    assert.equal(failed.status, FAILED);
    assert.equal(failed.failureReason, "billing_unavailable");
    assert.equal((await stockOf(client, productId))?.available, 2n);
    // The outcome of the charge is unknown: core keeps asking (same key) until billing answers.
    const [pending] = await harness.sql<{ status: string; step: string }[]>`
      select status, step from sagas where order_id = ${orderId}`;
    assert.deepEqual(pending, { status: "compensating", step: "resolve_charge" });
    billing.script = {};
    const settled = await sagaSettles(harness.sql, orderId);
    assert.equal(settled.status, "compensated");
    // Billing took the money on the probe; core gave it back: nothing is kept.
    assert.equal(billing.kept(chargeKey(orderId)).length, 0);
    assert.equal(billing.charges.get(chargeKey(orderId))?.status, "refunded");
  });

  test("slow billing: the attempt times out, the retry with the same key finds the first charge", async () => {
    const { client, productId } = await setup(1);
    billing.script = { charge: (_req, n) => (n === 1 ? { delayMs: 800 } : "ok") };
    const { order: placed } = await order(client, productId);
    const confirmed = await orderReaches(client, placed?.orderId ?? "", terminal);
    assert.equal(confirmed.status, CONFIRMED);
    assert.equal(billing.kept(chargeKey(confirmed.orderId)).length, 1);
    assert.equal(
      [...billing.charges.values()].filter((c) => c.key === chargeKey(confirmed.orderId)).length,
      1,
    );
  });

  test("a charge whose answer is lost is found again on retry, never charged twice", async () => {
    const { client, productId } = await setup(1);
    billing.script = { charge: (_req, n) => (n === 1 ? "charge-then-unavailable" : "ok") };
    const { order: placed } = await order(client, productId);
    const confirmed = await orderReaches(client, placed?.orderId ?? "", terminal);
    assert.equal(confirmed.status, CONFIRMED);
    assert.equal(billing.kept(chargeKey(confirmed.orderId)).length, 1);
  });

  test("cancelling a confirmed order refunds it and restocks through the compensations", async () => {
    const { client, productId } = await setup(4);
    const { order: placed } = await order(client, productId, 3);
    const orderId = placed?.orderId ?? "";
    await orderReaches(client, orderId, [CONFIRMED]);
    billing.script = { refund: (n) => (n === 1 ? "unavailable" : "ok") };
    await client.cancelOrder({ orderId, reason: "changed my mind" });
    const cancelled = await orderReaches(client, orderId, [CANCELLED]);
    assert.equal(cancelled.cancelReason, "changed my mind");
    assert.equal(billing.charges.get(chargeKey(orderId))?.status, "refunded");
    const stock = await stockOf(client, productId);
    assert.deepEqual([stock?.onHand, stock?.reserved, stock?.available], [4n, 0n, 4n]);
    const event = await tap.waitFor(OrderCancelledSchema, (e) => e.orderId === orderId);
    assert.equal(event.previousStatus, CONFIRMED);
    assert.equal(event.refunded?.amountMinor, 3n * 1250n);
    // Cancelling again answers it unchanged.
    const again = await client.cancelOrder({ orderId, reason: "again" });
    assert.equal(again.order?.status, CANCELLED);
  });

  test("cancelling while the charge is in flight refunds the charge when it lands", async () => {
    const { tenant, client, productId } = await setup(2);
    // Shorter than the step deadline (400 ms here), long enough to cancel meanwhile.
    billing.script = { charge: (_req, n) => (n === 1 ? { delayMs: 300 } : "ok") };
    const placing = order(client, productId);
    // Cancel once the charge attempt is persisted, i.e. while billing is still answering.
    const [row] = await eventually(
      async () => {
        const rows = await harness.sql<{ order_id: string }[]>`
          select l.order_id from saga_log l join orders o on o.order_id = l.order_id
          where o.tenant_id = ${tenant} and l.step = 'charge' and l.outcome = 'attempt'
            and o.status = 'reserved'`;
        return rows.length > 0 && rows;
      },
      { what: "the charge to be in flight" },
    );
    const orderId = row?.order_id ?? "";
    await client.cancelOrder({ orderId, reason: "too slow" });
    await placing;
    await sagaSettles(harness.sql, orderId);
    assert.equal((await client.getOrder({ orderId })).order?.status, CANCELLED);
    assert.equal(billing.charges.get(chargeKey(orderId))?.status, "refunded");
    assert.equal(billing.kept(chargeKey(orderId)).length, 0);
    assert.equal((await stockOf(client, productId))?.available, 2n);
  });

  test("fulfilling takes the units out of stock; the state machine refuses illegal moves", async () => {
    const { client, productId } = await setup(5);
    const { order: placed } = await order(client, productId, 2);
    const orderId = placed?.orderId ?? "";
    await orderReaches(client, orderId, [CONFIRMED]);
    const { order: fulfilled } = await client.fulfillOrder({ orderId, note: "tracking 123" });
    assert.equal(fulfilled?.status, FULFILLED);
    const stock = await stockOf(client, productId);
    assert.deepEqual([stock?.onHand, stock?.reserved, stock?.available], [3n, 0n, 3n]);
    await tap.waitFor(OrderFulfilledSchema, (e) => e.orderId === orderId);
    assert.equal((await client.fulfillOrder({ orderId })).order?.status, FULFILLED);
    await assert.rejects(
      client.cancelOrder({ orderId, reason: "late" }),
      (e) => ConnectError.from(e).code === Code.FailedPrecondition,
    );

    billing.script = { charge: () => "decline" };
    const { order: declined } = await order(client, productId);
    await orderReaches(client, declined?.orderId ?? "", [FAILED]);
    for (const call of [
      () => client.fulfillOrder({ orderId: declined?.orderId ?? "" }),
      () => client.cancelOrder({ orderId: declined?.orderId ?? "", reason: "x" }),
    ]) {
      await assert.rejects(call(), (e) => ConnectError.from(e).code === Code.FailedPrecondition);
    }
  });

  test("one idempotency key, many concurrent calls: one order, one charge", async () => {
    const { client, productId } = await setup(5);
    const key = uniqueName("same");
    const answers = await Promise.all(Array.from({ length: 8 }, () => order(client, productId, 1, key)));
    const ids = new Set(answers.map((a) => a.order?.orderId));
    assert.equal(ids.size, 1);
    assert.equal(answers.filter((a) => !a.replayed).length, 1);
    const orderId = [...ids][0] ?? "";
    await orderReaches(client, orderId, [CONFIRMED]);
    const later = await order(client, productId, 1, key);
    assert.equal(later.replayed, true);
    assert.equal(later.order?.status, CONFIRMED);
    assert.equal([...billing.charges.values()].filter((c) => c.key === chargeKey(orderId)).length, 1);
    assert.equal((await stockOf(client, productId))?.reserved, 1n);
    // The same key for a different order is refused.
    await assert.rejects(
      order(client, productId, 2, key),
      (e) => ConnectError.from(e).code === Code.FailedPrecondition,
    );
  });

  test("50 concurrent orders for the last 10 units: exactly 10 confirmed", async () => {
    const { client, productId } = await setup(10);
    const placed = await Promise.all(Array.from({ length: 50 }, () => order(client, productId)));
    const final = await Promise.all(
      placed.map((p) => orderReaches(client, p.order?.orderId ?? "", terminal, 30_000)),
    );
    const confirmed = final.filter((o) => o.status === CONFIRMED);
    assert.equal(confirmed.length, 10);
    assert.ok(final.filter((o) => o.status === FAILED).every((o) => o.failureReason === "out_of_stock"));
    const stock = await stockOf(client, productId);
    assert.deepEqual([stock?.onHand, stock?.reserved, stock?.available], [10n, 10n, 0n]);
    assert.equal(confirmed.filter((o) => billing.kept(chargeKey(o.orderId)).length === 1).length, 10);
    const failedCharged = final.filter(
      (o) => o.status === FAILED && billing.charges.has(chargeKey(o.orderId)),
    );
    assert.equal(failedCharged.length, 0);
  });
});

describe("reservations that expire", () => {
  let fx: CoreFixture;

  before(async () => {
    fx = await startCoreFixture({
      CORE_RESERVATION_TTL: "150",
      CORE_SAGA_STEP_TIMEOUT: "5000",
      CORE_ORDER_WAIT: "0",
    });
  });
  after(async () => {
    await fx?.close();
  });

  test("the sweeper releases a reservation whose charge is too slow; the late charge is refunded", async () => {
    const client = await fx.harness.client(fx.baseUrl, uniqueName("tenant"));
    const productId = await productWithStock(client, uniqueName("SKU"), 700n, 2);
    fx.billing.script = { charge: () => ({ delayMs: 1000 }) };
    const { order: placed } = await client.createOrder({
      items: [{ productId, quantity: 2 }],
      paymentMethod: "pm_card_visa",
      idempotencyKey: uniqueName("k"),
    });
    const orderId = placed?.orderId ?? "";
    // Released while the charge is still in flight: the units are available to others at once.
    await eventually(async () => (await client.getStock({ productId })).stock?.available === 2n, {
      what: "the expired units to be available",
    });
    await sagaSettles(fx.harness.sql, orderId);
    const failed = (await client.getOrder({ orderId })).order;
    assert.equal(failed?.status, FAILED);
    assert.equal(failed?.failureReason, "reservation_expired");
    assert.equal(fx.billing.charges.get(chargeKey(orderId))?.status, "refunded");
    assert.equal((await client.getStock({ productId })).stock?.reserved, 0n);
  });
});
