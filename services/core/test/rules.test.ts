import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { SubscriptionStatus } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { SubscriptionUpdatedSchema } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import type { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { eventHeaders, uuidv7 } from "@trellis/kit/events.js";
import { ensureStream } from "@trellis/kit/nats.js";
import { eventually, uniqueName } from "@trellis/kit/testing.js";
import { connect, type NatsConnection } from "nats";
import { checkBilling, checkOrder, parseRules } from "../src/rules.js";
import { type CoreFixture, startCoreFixture } from "./support/fixture.js";
import { productWithStock } from "./support/harness.js";

const codeOf = (e: unknown) => ConnectError.from(e).code;

describe("business rules (pure)", () => {
  const rules = parseRules({ maxQuantityPerLine: 5, maxUnitsPerOrder: 8 });
  const order = (quantities: number[], total = 100n, currency = "USD") => ({
    lines: quantities.map((quantity, i) => ({ productId: `p${i}`, quantity })),
    total: { amountMinor: total, currency },
  });
  const cases: Array<[string, string[], ReturnType<typeof order>, Parameters<typeof checkBilling>[2]]> = [
    ["within limits", [], order([5, 3]), { subscription: "active", planId: "p" }],
    ["too many of one product", ["quantity.per_line"], order([6]), { subscription: "active", planId: "p" }],
    ["too many units", ["quantity.per_order"], order([5, 4]), { subscription: "trialing", planId: "p" }],
    ["past due", ["subscription.status"], order([1]), { subscription: "past_due", planId: "p" }],
    [
      "over the plan's maximum",
      ["order_value.plan_max"],
      order([1], 5001n),
      { subscription: "active", planId: "p", maxOrderValue: { amountMinor: 5000n, currency: "USD" } },
    ],
    [
      "at the plan's maximum",
      [],
      order([1], 5000n),
      { subscription: "active", planId: "p", maxOrderValue: { amountMinor: 5000n, currency: "USD" } },
    ],
    [
      "another currency than the plan's maximum",
      ["order_value.plan_max"],
      order([1], 1n, "EUR"),
      { subscription: "active", planId: "p", maxOrderValue: { amountMinor: 5000n, currency: "USD" } },
    ],
  ];
  for (const [name, expected, facts, billing] of cases) {
    test(name, () => {
      const broken = [...checkOrder(rules, facts), ...checkBilling(rules, facts, billing)].map((v) => v.rule);
      assert.deepEqual(broken, expected);
    });
  }
  test("CORE_RULES is checked key by key", () => {
    assert.throws(() => parseRules({ maxQuantityPerLine: 0 }));
    assert.throws(() => parseRules({ unknownRule: 1 }));
    assert.throws(() => parseRules({ blockedSubscriptionStatuses: ["late"] }));
    assert.deepEqual(parseRules({}).blockedSubscriptionStatuses, ["past_due"]);
  });
});

describe("business rules in CreateOrder, with billing's status cached and refreshed by its events", () => {
  let fx: CoreFixture;
  let nc: NatsConnection;

  before(async () => {
    fx = await startCoreFixture({ CORE_RULES: JSON.stringify({ maxQuantityPerLine: 5 }) });
    nc = await connect({ servers: fx.nats.url });
    // Billing's stream, as billing would create it; core's consumer attaches once it exists.
    await ensureStream(await nc.jetstreamManager(), { name: "BILLING", subjects: ["trellis.billing.>"] });
  });
  after(async () => {
    await nc?.close();
    await fx?.close();
  });

  const setup = async (): Promise<{
    tenant: string;
    client: Client<typeof CoreService>;
    productId: string;
  }> => {
    const tenant = uniqueName("tenant");
    const client = await fx.harness.client(fx.baseUrl, tenant);
    const productId = await productWithStock(client, uniqueName("SKU"), 1000n, 100);
    return { tenant, client, productId };
  };
  const place = (client: Client<typeof CoreService>, productId: string, quantity: number) =>
    client.createOrder({
      items: [{ productId, quantity }],
      paymentMethod: "pm_card_visa",
      idempotencyKey: uniqueName("k"),
    });
  const publish = async <D extends DescMessage>(schema: D, message: MessageShape<D>) => {
    const id = uuidv7();
    const headers = eventHeaders({ id, type: schema.typeName, service: "billing", time: new Date() });
    await nc
      .jetstream()
      .publish("trellis.billing.subscription.updated", toBinary(schema, message), { headers, msgID: id });
  };

  test("a configured quantity limit is invalid_argument", async () => {
    const { client, productId } = await setup();
    await assert.rejects(place(client, productId, 6), (e) => codeOf(e) === Code.InvalidArgument);
    await place(client, productId, 5);
  });

  test("the plan's maximum order value comes from billing", async () => {
    const { tenant, client, productId } = await setup();
    fx.billing.setStatus(tenant, SubscriptionStatus.ACTIVE, 3000n);
    await assert.rejects(place(client, productId, 4), (e) => codeOf(e) === Code.FailedPrecondition);
    await place(client, productId, 3);
  });

  test("no new orders while past_due; the cache follows billing's subscription events", async () => {
    const { tenant, client, productId } = await setup();
    await place(client, productId, 1);
    const asked = fx.billing.calls.status;
    // Billing changes, but without an event core keeps its cached answer and does not ask again.
    fx.billing.setStatus(tenant, SubscriptionStatus.PAST_DUE);
    await place(client, productId, 1);
    assert.equal(fx.billing.calls.status, asked);
    const event = (status: SubscriptionStatus, previous: SubscriptionStatus) =>
      create(SubscriptionUpdatedSchema, {
        eventId: uuidv7(),
        tenantId: tenant,
        subscriptionId: "sub_1",
        planId: "plan_test",
        previousPlanId: "plan_test",
        status,
        previousStatus: previous,
        occurredAt: timestampNow(),
      });
    await publish(SubscriptionUpdatedSchema, event(SubscriptionStatus.PAST_DUE, SubscriptionStatus.ACTIVE));
    await eventually(
      () =>
        place(client, productId, 1).then(
          () => false,
          (e) => codeOf(e) === Code.FailedPrecondition,
        ),
      { what: "past_due to block orders" },
    );
    fx.billing.setStatus(tenant, SubscriptionStatus.ACTIVE);
    await publish(SubscriptionUpdatedSchema, event(SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE));
    await eventually(() => place(client, productId, 1).then(() => true), {
      what: "orders to be allowed again",
    });
  });

  test("without any cached status, billing down is unavailable and nothing is written", async () => {
    const { tenant, client, productId } = await setup();
    fx.billing.script = { status: () => "unavailable" };
    try {
      await assert.rejects(place(client, productId, 1), (e) => codeOf(e) === Code.Unavailable);
    } finally {
      fx.billing.script = {};
    }
    const [row] = await fx.harness.sql<
      { n: number }[]
    >`select count(*)::int as n from orders where tenant_id = ${tenant}`;
    assert.equal(row?.n, 0);
  });
});
