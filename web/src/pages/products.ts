import { Code } from "@connectrpc/connect";
import type { Product, Stock } from "@trellis/gen/trellis/core/v1/core_pb.js";
import type { Page, PageContext } from "../app.ts";
import { checked, field, h, replace } from "../dom.ts";
import { formatMoney, parseMoney } from "../format.ts";
import { problemNote, showProblem, submitting } from "../forms.ts";

const currencies = ["USD", "EUR", "GBP", "JPY"];

/** The catalog: create products, see their stock, adjust it. */
export const productsPage: Page = (ctx) => {
  const list = h("div", { class: "list" }, h("p", { class: "muted" }, "Loading…"));
  const reload = () => void loadProducts(ctx, list);
  const root = h(
    "section",
    { "data-page": "products" },
    h("h1", {}, "Products"),
    h("div", { class: "card" }, h("h2", {}, "New product"), createForm(ctx, reload)),
    h("div", { class: "card" }, h("h2", {}, "Catalog"), list),
  );
  reload();
  return root;
};

function createForm(ctx: PageContext, reload: () => void): HTMLFormElement {
  const form = h(
    "form",
    { "data-form": "create-product", class: "grid" },
    h("label", {}, "SKU", h("input", { name: "sku", required: true, placeholder: "TSHIRT-M" })),
    h("label", {}, "Name", h("input", { name: "name", required: true })),
    h(
      "label",
      {},
      "Price",
      h("input", { name: "price", inputmode: "decimal", required: true, placeholder: "19.99" }),
    ),
    h(
      "label",
      {},
      "Currency",
      h(
        "select",
        { name: "price.currency" },
        currencies.map((c) => h("option", { value: c }, c)),
      ),
    ),
    h(
      "label",
      {},
      "Low stock alert at",
      h("input", { name: "low_stock_threshold", type: "number", min: 0, value: "0" }),
    ),
    h(
      "label",
      { class: "check" },
      h("input", { name: "active", type: "checkbox", checked: true }),
      "Can be ordered",
    ),
    h("label", { class: "wide" }, "Description", h("textarea", { name: "description", rows: 2 })),
    h("button", { type: "submit" }, "Create product"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const currency = field(form, "price.currency");
    const amount = parseMoney(field(form, "price"), currency);
    if (amount === undefined) {
      showProblem(form, {
        code: Code.InvalidArgument,
        message: "Please correct the highlighted fields.",
        fields: new Map([["price", `Enter an amount like 19.99 in ${currency}.`]]),
        aborted: false,
      });
      return;
    }
    void submitting(form, async () => {
      await ctx.api.core.createProduct({
        sku: field(form, "sku"),
        name: field(form, "name"),
        description: field(form, "description"),
        price: { amountMinor: amount, currency },
        active: checked(form, "active"),
        lowStockThreshold: Number(field(form, "low_stock_threshold") || 0),
      });
      form.reset();
      reload();
    });
  });
  return form;
}

async function loadProducts(ctx: PageContext, list: HTMLElement): Promise<void> {
  try {
    const { products } = await ctx.api.core.listProducts({ page: { pageSize: 100 } }, { signal: ctx.signal });
    if (products.length === 0) {
      replace(
        list,
        h("p", { class: "muted", "data-empty": "products" }, "No products yet. Create the first one above."),
      );
      return;
    }
    const stocks = await Promise.all(
      products.map((p) =>
        ctx.api.core.getStock({ productId: p.productId }, { signal: ctx.signal }).then(
          (r) => r.stock,
          () => undefined,
        ),
      ),
    );
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
            ["SKU", "Name", "Price", "Available", "On hand", "Adjust stock"].map((t) => h("th", {}, t)),
          ),
        ),
        h(
          "tbody",
          {},
          products.map((p, i) => productRow(ctx, p, stocks[i], () => void loadProducts(ctx, list))),
        ),
      ),
    );
  } catch (error) {
    const note = problemNote(error);
    if (note) replace(list, note);
  }
}

function productRow(ctx: PageContext, product: Product, stock: Stock | undefined, reload: () => void) {
  const form = h(
    "form",
    { class: "inline", "data-form": "adjust-stock" },
    h("input", {
      name: "delta",
      type: "number",
      "aria-label": "Units to add (negative to remove)",
      value: "10",
      required: true,
    }),
    h("input", { name: "reason", "aria-label": "Reason", value: "received shipment", required: true }),
    h("button", { type: "submit" }, "Apply"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submitting(form, async () => {
      await ctx.api.core.adjustStock({
        productId: product.productId,
        delta: Number(field(form, "delta")),
        reason: field(form, "reason"),
        idempotencyKey: crypto.randomUUID(),
      });
      reload();
    });
  });
  return h(
    "tr",
    { "data-sku": product.sku },
    h("td", {}, h("code", {}, product.sku)),
    h("td", {}, product.name, product.active ? "" : h("span", { class: "tag" }, "inactive")),
    h("td", { class: "num" }, formatMoney(product.price)),
    h("td", { class: "num", "data-cell": "available" }, stock ? String(stock.available) : "—"),
    h("td", { class: "num" }, stock ? String(stock.onHand) : "—"),
    h("td", {}, form),
  );
}
