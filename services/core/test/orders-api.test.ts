import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CoreService, OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { uniqueName } from "@trellis/kit/testing.js";
import { type CoreFixture, startCoreFixture } from "./support/fixture.js";
import { orderReaches, productWithStock } from "./support/harness.js";

const codeOf = (e: unknown) => ConnectError.from(e).code;

describe("orders: bad input, access, tenant isolation, listing", () => {
  let fx: CoreFixture;

  before(async () => {
    fx = await startCoreFixture();
  });
  after(async () => {
    await fx?.close();
  });

  test("bad input is invalid_argument and writes nothing", async () => {
    const tenant = uniqueName("tenant");
    const c = await fx.harness.client(fx.baseUrl, tenant);
    const productId = await productWithStock(c, "IN-1", 100n, 5);
    const item = { productId, quantity: 1 };
    const order = { paymentMethod: "pm_card_visa", idempotencyKey: "k" };
    const cases: Array<[string, () => Promise<unknown>]> = [
      [
        "bad sku",
        () => c.createProduct({ sku: "-bad", name: "x", price: { amountMinor: 1n, currency: "USD" } }),
      ],
      [
        "empty name",
        () => c.createProduct({ sku: "OK-1", name: "", price: { amountMinor: 1n, currency: "USD" } }),
      ],
      ["no price", () => c.createProduct({ sku: "OK-2", name: "x" })],
      [
        "negative price",
        () => c.createProduct({ sku: "OK-3", name: "x", price: { amountMinor: -1n, currency: "USD" } }),
      ],
      [
        "bad currency",
        () => c.createProduct({ sku: "OK-4", name: "x", price: { amountMinor: 1n, currency: "usd" } }),
      ],
      [
        "threshold < 0",
        () =>
          c.createProduct({
            sku: "OK-5",
            name: "x",
            price: { amountMinor: 1n, currency: "USD" },
            lowStockThreshold: -1,
          }),
      ],
      ["no items", () => c.createOrder({ ...order, items: [] })],
      ["same product twice", () => c.createOrder({ ...order, items: [item, item] })],
      ["quantity 0", () => c.createOrder({ ...order, items: [{ productId, quantity: 0 }] })],
      ["quantity 1001", () => c.createOrder({ ...order, items: [{ productId, quantity: 1001 }] })],
      ["no payment method", () => c.createOrder({ ...order, paymentMethod: "", items: [item] })],
      ["no idempotency key", () => c.createOrder({ ...order, idempotencyKey: "", items: [item] })],
      ["delta 0", () => c.adjustStock({ productId, delta: 0, reason: "x", idempotencyKey: "z" })],
      ["no reason", () => c.adjustStock({ productId, delta: 1, reason: "", idempotencyKey: "z" })],
      ["unspecified status filter", () => c.listOrders({ statuses: [OrderStatus.UNSPECIFIED] })],
      ["page size 501", () => c.listProducts({ page: { pageSize: 501 } })],
      ["cancel without reason", () => c.cancelOrder({ orderId: "ord_x", reason: "" })],
    ];
    for (const [name, call] of cases) {
      await assert.rejects(call(), (e) => codeOf(e) === Code.InvalidArgument, name);
    }
    const [count] = await fx.harness.sql<{ n: number }[]>`
      select (select count(*) from orders where tenant_id = ${tenant})::int
           + (select count(*) from products where tenant_id = ${tenant} and sku <> 'IN-1')::int as n`;
    assert.equal(count?.n, 0);
  });

  test("orders of unknown, inactive or mixed-currency products are refused", async () => {
    const c = await fx.harness.client(fx.baseUrl, uniqueName("tenant"));
    const usd = await productWithStock(c, "USD-1", 100n, 5);
    const { product: eur } = await c.createProduct({
      sku: "EUR-1",
      name: "x",
      price: { amountMinor: 100n, currency: "EUR" },
      active: true,
    });
    const { product: inactive } = await c.createProduct({
      sku: "OFF-1",
      name: "x",
      price: { amountMinor: 100n, currency: "USD" },
      active: false,
    });
    const place = (items: { productId: string; quantity: number }[]) =>
      c.createOrder({ items, paymentMethod: "pm_card_visa", idempotencyKey: uniqueName("k") });
    await assert.rejects(place([{ productId: "prd_nope", quantity: 1 }]), (e) => codeOf(e) === Code.NotFound);
    await assert.rejects(
      place([{ productId: inactive?.productId ?? "", quantity: 1 }]),
      (e) => codeOf(e) === Code.FailedPrecondition,
    );
    await assert.rejects(
      place([
        { productId: usd, quantity: 1 },
        { productId: eur?.productId ?? "", quantity: 1 },
      ]),
      (e) => codeOf(e) === Code.InvalidArgument,
    );
  });

  test("no token is unauthenticated; a token without the permission is permission_denied", async () => {
    const anonymous = createClient(CoreService, createGrpcTransport({ baseUrl: fx.baseUrl }));
    await assert.rejects(anonymous.listProducts({}), (e) => codeOf(e) === Code.Unauthenticated);
    const reader = await fx.harness.client(fx.baseUrl, uniqueName("tenant"), ["core.products.read"]);
    await reader.listProducts({});
    await assert.rejects(
      reader.createProduct({ sku: "X-1", name: "x", price: { amountMinor: 1n, currency: "USD" } }),
      (e) => codeOf(e) === Code.PermissionDenied,
    );
    await assert.rejects(
      reader.createOrder({
        items: [{ productId: "p", quantity: 1 }],
        paymentMethod: "pm",
        idempotencyKey: "k",
      }),
      (e) => codeOf(e) === Code.PermissionDenied,
    );
  });

  test("tenants are isolated: another tenant's ids are not_found and its lists are empty", async () => {
    const a = await fx.harness.client(fx.baseUrl, uniqueName("tenant_a"));
    const b = await fx.harness.client(fx.baseUrl, uniqueName("tenant_b"));
    const productId = await productWithStock(a, "ISO-1", 100n, 5);
    const { order } = await a.createOrder({
      items: [{ productId, quantity: 1 }],
      paymentMethod: "pm_card_visa",
      idempotencyKey: "shared-key",
    });
    const orderId = order?.orderId ?? "";
    await orderReaches(a, orderId, [OrderStatus.CONFIRMED]);
    for (const [name, call] of [
      ["GetProduct", () => b.getProduct({ productId })],
      ["UpdateProduct", () => b.updateProduct({ productId, name: "stolen" })],
      ["GetStock", () => b.getStock({ productId })],
      ["AdjustStock", () => b.adjustStock({ productId, delta: -1, reason: "x", idempotencyKey: "x" })],
      ["GetOrder", () => b.getOrder({ orderId })],
      ["CancelOrder", () => b.cancelOrder({ orderId, reason: "x" })],
      ["FulfillOrder", () => b.fulfillOrder({ orderId })],
      [
        "CreateOrder",
        () =>
          b.createOrder({ items: [{ productId, quantity: 1 }], paymentMethod: "pm", idempotencyKey: "k2" }),
      ],
    ] as const) {
      await assert.rejects(call(), (e) => codeOf(e) === Code.NotFound, name);
    }
    assert.equal((await b.listProducts({})).products.length, 0);
    assert.equal((await b.listOrders({})).orders.length, 0);
    // Idempotency keys are per tenant: b's "shared-key" is its own order.
    const own = await productWithStock(b, "ISO-1", 100n, 5);
    const { order: bOrder, replayed } = await b.createOrder({
      items: [{ productId: own, quantity: 1 }],
      paymentMethod: "pm_card_visa",
      idempotencyKey: "shared-key",
    });
    assert.equal(replayed, false);
    assert.notEqual(bOrder?.orderId, orderId);
    assert.equal((await a.getStock({ productId })).stock?.reserved, 1n);
  });

  test("ListOrders: newest first, filtered by status, paged with tokens bound to the filter", async () => {
    const c = await fx.harness.client(fx.baseUrl, uniqueName("tenant"));
    const productId = await productWithStock(c, "LST-1", 100n, 10);
    fx.billing.script = { charge: (req) => (req.paymentMethod === "pm_card_declined" ? "decline" : "ok") };
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { order } = await c.createOrder({
        items: [{ productId, quantity: 1 }],
        paymentMethod: i % 2 === 1 ? "pm_card_declined" : "pm_card_visa",
        idempotencyKey: `list-${i}`,
      });
      ids.push(order?.orderId ?? "");
    }
    await Promise.all(ids.map((id) => orderReaches(c, id, [OrderStatus.CONFIRMED, OrderStatus.FAILED])));
    fx.billing.script = {};
    const seen: string[] = [];
    let token = "";
    do {
      const res = await c.listOrders({ page: { pageSize: 2, pageToken: token } });
      seen.push(...res.orders.map((o) => o.orderId));
      token = res.page?.nextPageToken ?? "";
    } while (token);
    assert.deepEqual(seen, [...ids].reverse());
    const confirmed = await c.listOrders({ statuses: [OrderStatus.CONFIRMED], page: { pageSize: 1 } });
    assert.equal(confirmed.orders[0]?.status, OrderStatus.CONFIRMED);
    assert.equal(confirmed.orders[0]?.items[0]?.sku, "LST-1");
    await assert.rejects(
      c.listOrders({
        statuses: [OrderStatus.FAILED],
        page: { pageToken: confirmed.page?.nextPageToken ?? "" },
      }),
      (e) => codeOf(e) === Code.InvalidArgument,
    );
    const failed = await c.listOrders({ statuses: [OrderStatus.FAILED, OrderStatus.CANCELLED] });
    assert.deepEqual(
      failed.orders.map((o) => o.orderId),
      [ids[3], ids[1]],
    );
  });
});
