import { type Order, OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";
import type { Page, PageContext } from "../app.ts";
import { type Child, field, h, replace } from "../dom.ts";
import {
  failureReasonText,
  formatMoney,
  formatTime,
  orderSettled,
  orderStatusLabel,
  sandboxCards,
} from "../format.ts";
import { problemNote, submitting } from "../forms.ts";

/** Place an order and list the tenant's orders. */
export const ordersPage: Page = (ctx) => {
  const formSlot = h("div", {}, h("p", { class: "muted" }, "Loading products…"));
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  void loadForm(ctx, formSlot);
  void loadOrders(ctx, list);
  return h(
    "section",
    { "data-page": "orders" },
    h("h1", {}, "Orders"),
    h("div", { class: "card" }, h("h2", {}, "Place an order"), formSlot),
    h("div", { class: "card" }, h("h2", {}, "Recent orders"), list),
  );
};

async function loadForm(ctx: PageContext, slot: HTMLElement): Promise<void> {
  try {
    const { products } = await ctx.api.core.listProducts(
      { page: { pageSize: 100 }, active: true },
      { signal: ctx.signal },
    );
    if (products.length === 0) {
      replace(
        slot,
        h(
          "p",
          { class: "muted" },
          "No products can be ordered yet. ",
          h("a", { href: "#/products" }, "Create one"),
          ".",
        ),
      );
      return;
    }
    const form = h(
      "form",
      { "data-form": "place-order", class: "grid" },
      h(
        "label",
        {},
        "Product",
        h(
          "select",
          { name: "items[0].product_id" },
          products.map((p) =>
            h("option", { value: p.productId }, `${p.name} (${p.sku}) — ${formatMoney(p.price)}`),
          ),
        ),
      ),
      h(
        "label",
        {},
        "Quantity",
        h("input", { name: "items[0].quantity", type: "number", min: 1, value: "1", required: true }),
      ),
      h(
        "label",
        {},
        "Payment method (sandbox)",
        h(
          "select",
          { name: "payment_method" },
          sandboxCards.map((c) => h("option", { value: c.token }, c.label)),
        ),
      ),
      h("button", { type: "submit" }, "Place order"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void submitting(form, async () => {
        const { order } = await ctx.api.core.createOrder({
          items: [
            {
              productId: field(form, "items[0].product_id"),
              quantity: Number(field(form, "items[0].quantity")),
            },
          ],
          paymentMethod: field(form, "payment_method"),
          idempotencyKey: crypto.randomUUID(),
        });
        if (order) ctx.navigate(`#/orders/${order.orderId}`);
      });
    });
    replace(slot, form);
  } catch (error) {
    const note = problemNote(error);
    if (note) replace(slot, note);
  }
}

async function loadOrders(ctx: PageContext, list: HTMLElement): Promise<void> {
  try {
    const { orders } = await ctx.api.core.listOrders({ page: { pageSize: 20 } }, { signal: ctx.signal });
    if (orders.length === 0) {
      replace(list, h("p", { class: "muted" }, "No orders yet."));
      return;
    }
    replace(
      list,
      h(
        "table",
        {},
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Order", "Status", "Total", "Placed"].map((t) => h("th", {}, t)),
          ),
        ),
        h(
          "tbody",
          {},
          orders.map((o) =>
            h(
              "tr",
              {},
              h("td", {}, h("a", { href: `#/orders/${o.orderId}` }, h("code", {}, o.orderId))),
              h("td", {}, statusTag(o.status)),
              h("td", { class: "num" }, formatMoney(o.total)),
              h("td", {}, formatTime(o.createTime)),
            ),
          ),
        ),
      ),
    );
  } catch (error) {
    const note = problemNote(error);
    if (note) replace(list, note);
  }
}

function statusTag(status: OrderStatus): HTMLElement {
  return h(
    "span",
    { class: `status status-${orderStatusLabel(status).replace(/ /g, "-")}` },
    orderStatusLabel(status),
  );
}

const sagaSteps = [OrderStatus.PENDING, OrderStatus.RESERVED, OrderStatus.PAID, OrderStatus.CONFIRMED];

/** One order, watched while its saga runs: GetOrder is polled until it settles. */
export const orderPage: Page = (ctx) => {
  const orderId = ctx.params[0] ?? "";
  const view = h("div", { class: "card", "data-order": orderId }, h("p", { class: "muted" }, "Loading…"));
  const root = h(
    "section",
    { "data-page": "order" },
    h("p", {}, h("a", { href: "#/orders" }, "← Orders")),
    view,
  );
  void watch(ctx, orderId, view);
  return root;
};

async function watch(ctx: PageContext, orderId: string, view: HTMLElement): Promise<void> {
  let delay = 400;
  while (!ctx.signal.aborted) {
    try {
      const { order } = await ctx.api.core.getOrder({ orderId }, { signal: ctx.signal });
      if (!order) return;
      replace(view, orderView(ctx, order, view));
      view.dataset.status = orderStatusLabel(order.status);
      if (orderSettled(order.status)) return;
      delay = 400;
    } catch (error) {
      const note = problemNote(error);
      if (!note) return;
      view.prepend(note);
      delay = Math.min(delay * 2, 5000);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

function orderView(ctx: PageContext, order: Order, view: HTMLElement): Child[] {
  const failed = order.status === OrderStatus.FAILED || order.status === OrderStatus.CANCELLED;
  const reached = new Set(order.history.map((c) => c.status));
  const steps = h(
    "ol",
    { class: "steps" },
    sagaSteps.map((s) =>
      h(
        "li",
        { class: reached.has(s) || order.status === s ? "done" : failed ? "skipped" : "todo" },
        orderStatusLabel(s),
      ),
    ),
  );
  const actions = h("div", { class: "actions" });
  if (order.status === OrderStatus.CONFIRMED) {
    const act = (label: string, run: () => Promise<unknown>) => {
      const form = h("form", { class: "inline" }, h("button", { type: "submit" }, label));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        void submitting(form, async () => {
          await run();
          void watch(ctx, order.orderId, view);
        });
      });
      return form;
    };
    actions.append(
      act("Mark fulfilled", () => ctx.api.core.fulfillOrder({ orderId: order.orderId, note: "shipped" })),
      act("Cancel and refund", () =>
        ctx.api.core.cancelOrder({ orderId: order.orderId, reason: "cancelled from the console" }),
      ),
    );
  }
  return [
    h("h1", {}, "Order ", h("code", {}, order.orderId)),
    h(
      "p",
      { class: "big" },
      statusTag(order.status),
      orderSettled(order.status) ? "" : h("span", { class: "spinner", "aria-label": "in progress" }),
    ),
    order.failureReason
      ? h(
          "p",
          { class: "form-error", "data-failure": order.failureReason },
          failureReasonText(order.failureReason),
        )
      : "",
    order.cancelReason ? h("p", { class: "muted" }, `Cancelled: ${order.cancelReason}`) : "",
    steps,
    h(
      "table",
      {},
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Item", "Qty", "Unit price", "Total"].map((t) => h("th", {}, t)),
        ),
      ),
      h(
        "tbody",
        {},
        order.items.map((i) =>
          h(
            "tr",
            {},
            h("td", {}, `${i.name} (${i.sku})`),
            h("td", { class: "num" }, String(i.quantity)),
            h("td", { class: "num" }, formatMoney(i.unitPrice)),
            h("td", { class: "num" }, formatMoney(i.lineTotal)),
          ),
        ),
        h(
          "tr",
          { class: "total" },
          h("td", { colspan: 3 }, "Total"),
          h("td", { class: "num" }, formatMoney(order.total)),
        ),
      ),
    ),
    h("h2", {}, "History"),
    h(
      "ul",
      { class: "history" },
      order.history.map((c) =>
        h("li", {}, formatTime(c.time), " — ", orderStatusLabel(c.status), c.note ? ` (${c.note})` : ""),
      ),
    ),
    actions,
  ];
}
