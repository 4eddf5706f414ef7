import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { StockLowSchema } from "@trellis/gen/trellis/core/v1/events_pb.js";
import { uniqueName } from "@trellis/kit/testing.js";
import { type EventTap, tapCoreEvents } from "./support/events.js";
import { type CoreFixture, startCoreFixture } from "./support/fixture.js";
import { productWithStock } from "./support/harness.js";

const codeOf = (e: unknown) => ConnectError.from(e).code;

describe("catalog and inventory", () => {
  let fx: CoreFixture;
  let tap: EventTap;
  let client: Client<typeof CoreService>;

  before(async () => {
    fx = await startCoreFixture();
    tap = await tapCoreEvents(fx.nats.url);
  });
  after(async () => {
    await tap?.close();
    await fx?.close();
  });

  const newTenant = async () => {
    client = await fx.harness.client(fx.baseUrl, uniqueName("tenant"));
    return client;
  };

  test("CreateProduct and GetProduct; a SKU is unique per tenant", async () => {
    const c = await newTenant();
    const { product } = await c.createProduct({
      sku: "MUG-1",
      name: "Mug",
      description: "A mug",
      price: { amountMinor: 1999n, currency: "EUR" },
      active: true,
      lowStockThreshold: 2,
    });
    assert.ok(product?.productId.startsWith("prd_"));
    assert.equal(product?.version, 1n);
    const { product: got } = await c.getProduct({ productId: product?.productId ?? "" });
    assert.equal(got?.sku, "MUG-1");
    assert.equal(got?.price?.amountMinor, 1999n);
    assert.equal(got?.price?.currency, "EUR");
    const { stock } = await c.getStock({ productId: product?.productId ?? "" });
    assert.deepEqual([stock?.onHand, stock?.reserved, stock?.available], [0n, 0n, 0n]);
    await assert.rejects(
      c.createProduct({ sku: "MUG-1", name: "Other", price: { amountMinor: 1n, currency: "EUR" } }),
      (e) => codeOf(e) === Code.AlreadyExists,
    );
    const other = await fx.harness.client(fx.baseUrl, uniqueName("tenant"));
    await other.createProduct({ sku: "MUG-1", name: "Mug", price: { amountMinor: 1n, currency: "EUR" } });
  });

  test("UpdateProduct changes only the given fields and checks expected_version", async () => {
    const c = await newTenant();
    const { product } = await c.createProduct({
      sku: "A-1",
      name: "A",
      price: { amountMinor: 100n, currency: "USD" },
    });
    const productId = product?.productId ?? "";
    await c.createProduct({ sku: "B-1", name: "B", price: { amountMinor: 100n, currency: "USD" } });
    const { product: updated } = await c.updateProduct({ productId, name: "A renamed", expectedVersion: 1n });
    assert.equal(updated?.name, "A renamed");
    assert.equal(updated?.sku, "A-1");
    assert.equal(updated?.price?.amountMinor, 100n);
    assert.equal(updated?.version, 2n);
    const { product: cleared } = await c.updateProduct({ productId, description: "", active: true });
    assert.equal(cleared?.active, true);
    for (const [call, code] of [
      [() => c.updateProduct({ productId, name: "stale", expectedVersion: 1n }), Code.FailedPrecondition],
      [() => c.updateProduct({ productId, sku: "B-1" }), Code.AlreadyExists],
      [() => c.updateProduct({ productId: "prd_missing", name: "x" }), Code.NotFound],
    ] as const) {
      await assert.rejects(call(), (e) => codeOf(e) === code);
    }
  });

  test("ListProducts pages with opaque tokens, oldest first, with filters", async () => {
    const c = await newTenant();
    const made: string[] = [];
    for (const [sku, name, active] of [
      ["TEA-1", "Green Tea", true],
      ["TEA-2", "Black tea", true],
      ["TEA-3", "Old tea", false],
      ["COF-1", "Coffee", true],
      ["TEA-4", "White TEA", true],
    ] as const) {
      const { product } = await c.createProduct({
        sku,
        name,
        active,
        price: { amountMinor: 1n, currency: "USD" },
      });
      made.push(product?.productId ?? "");
    }
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const res = await c.listProducts({ page: { pageSize: 2, pageToken: token } });
      seen.push(...res.products.map((p) => p.productId));
      token = res.page?.nextPageToken ?? "";
      pages++;
    } while (token);
    assert.deepEqual(seen, made);
    assert.equal(pages, 3);

    const teas = await c.listProducts({ skuPrefix: "TEA-", active: true });
    assert.deepEqual(
      teas.products.map((p) => p.sku),
      ["TEA-1", "TEA-2", "TEA-4"],
    );
    const named = await c.listProducts({ nameContains: "tea" });
    assert.equal(named.products.length, 4);
    const first = await c.listProducts({ skuPrefix: "TEA-", page: { pageSize: 1 } });
    await assert.rejects(
      c.listProducts({
        skuPrefix: "COF-",
        page: { pageSize: 1, pageToken: first.page?.nextPageToken ?? "" },
      }),
      (e) => codeOf(e) === Code.InvalidArgument,
    );
    await assert.rejects(
      c.listProducts({ page: { pageToken: "not-a-token" } }),
      (e) => codeOf(e) === Code.InvalidArgument,
    );
  });

  test("AdjustStock applies a key once, and never takes on-hand below what is reserved", async () => {
    const c = await newTenant();
    const productId = await productWithStock(c, "BOX-1", 500n, 0);
    const first = await c.adjustStock({ productId, delta: 7, reason: "received", idempotencyKey: "rcv-1" });
    assert.equal(first.replayed, false);
    assert.equal(first.stock?.onHand, 7n);
    const again = await c.adjustStock({ productId, delta: 7, reason: "received", idempotencyKey: "rcv-1" });
    assert.equal(again.replayed, true);
    assert.equal(again.stock?.onHand, 7n);
    assert.equal((await c.getStock({ productId })).stock?.onHand, 7n);
    for (const [req, code] of [
      [{ productId, delta: 3, reason: "other", idempotencyKey: "rcv-1" }, Code.FailedPrecondition],
      [{ productId, delta: -8, reason: "too many", idempotencyKey: "out-1" }, Code.FailedPrecondition],
      [{ productId: "prd_missing", delta: 1, reason: "x", idempotencyKey: "m-1" }, Code.NotFound],
    ] as const) {
      await assert.rejects(c.adjustStock(req), (e) => codeOf(e) === code);
    }
    // Reserved units are protected: an order holds 5 of the 7.
    await c.createOrder({
      items: [{ productId, quantity: 5 }],
      paymentMethod: "pm_card_visa",
      idempotencyKey: "o-1",
    });
    await assert.rejects(
      c.adjustStock({ productId, delta: -3, reason: "damaged", idempotencyKey: "dmg-1" }),
      (e) => codeOf(e) === Code.FailedPrecondition,
    );
    const ok = await c.adjustStock({ productId, delta: -2, reason: "damaged", idempotencyKey: "dmg-2" });
    assert.deepEqual([ok.stock?.onHand, ok.stock?.reserved, ok.stock?.available], [5n, 5n, 0n]);
  });

  test("stock never goes negative: 40 concurrent removals of 1 from 10 units", async () => {
    const c = await newTenant();
    const productId = await productWithStock(c, "CON-1", 100n, 10);
    const results = await Promise.allSettled(
      Array.from({ length: 40 }, (_, i) =>
        c.adjustStock({ productId, delta: -1, reason: "pick", idempotencyKey: `pick-${i}` }),
      ),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 10);
    assert.ok(
      results.every((r) => r.status === "fulfilled" || codeOf(r.reason) === Code.FailedPrecondition),
      "every refusal is failed_precondition",
    );
    const { stock } = await c.getStock({ productId });
    assert.deepEqual([stock?.onHand, stock?.available], [0n, 0n]);
  });

  test("the CHECK constraint refuses a negative stock row even to direct SQL", async () => {
    const c = await newTenant();
    const productId = await productWithStock(c, "CHK-1", 100n, 2);
    await assert.rejects(
      fx.harness.sql`update stock set reserved = on_hand + 1 where product_id = ${productId}`,
      (e: { code?: string }) => e.code === "23514",
    );
    await assert.rejects(
      fx.harness.sql`update stock set on_hand = -1, reserved = 0 where product_id = ${productId}`,
      (e: { code?: string }) => e.code === "23514",
    );
  });

  test("StockLow is published once per crossing of the threshold", async () => {
    const c = await newTenant();
    const productId = await productWithStock(c, "LOW-1", 100n, 6, 3);
    const adjust = (delta: number, key: string) =>
      c.adjustStock({ productId, delta, reason: "test", idempotencyKey: key });
    await adjust(-3, "l1"); // 3: crosses
    await adjust(-1, "l2"); // 2: still low, no event
    await adjust(5, "l3"); // 7: back above
    await adjust(-5, "l4"); // 2: crosses again
    const events = await tapUntil(2);
    assert.deepEqual(
      events.map((e) => e.available),
      [3n, 2n],
    );
    assert.equal(events[0]?.threshold, 3);
    assert.equal(events[0]?.sku, "LOW-1");

    async function tapUntil(n: number) {
      await tap.waitFor(StockLowSchema, (e) => e.productId === productId && e.available === 2n);
      const all = tap.all(StockLowSchema, (e) => e.productId === productId);
      assert.equal(all.length, n);
      return all;
    }
  });
});
