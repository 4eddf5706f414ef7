import { Code } from "@connectrpc/connect";
import { PlanInterval } from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import type { PageContext } from "../app.ts";
import { field, h } from "../dom.ts";
import { parseMoney } from "../format.ts";
import { showProblem, submitting } from "../forms.ts";

/** A form that adds a monthly plan to the shared catalog (needs billing.plans.manage). */
export function planForm(ctx: PageContext, reload: () => void): HTMLFormElement {
  const form = h(
    "form",
    { class: "grid", "data-form": "create-plan" },
    h("label", {}, "Name", h("input", { name: "name", required: true, placeholder: "Pro" })),
    h(
      "label",
      {},
      "Monthly price",
      h("input", { name: "prices", inputmode: "decimal", required: true, placeholder: "29.00" }),
    ),
    h("label", {}, "Currency", h("input", { name: "currency", value: "USD", maxlength: 3, required: true })),
    h(
      "label",
      {},
      "Trial days",
      h("input", { name: "trial_days", type: "number", min: 0, max: 365, value: "0" }),
    ),
    h("label", {}, "Largest order (optional)", h("input", { name: "max_order_value", inputmode: "decimal" })),
    h("label", { class: "wide" }, "Description", h("input", { name: "description" })),
    h("button", { type: "submit" }, "Add plan"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const currency = field(form, "currency").toUpperCase();
    const price = parseMoney(field(form, "prices"), currency);
    const maxText = field(form, "max_order_value");
    const max = maxText ? parseMoney(maxText, currency) : undefined;
    if (price === undefined || (maxText && max === undefined)) {
      const fields = new Map<string, string>();
      if (price === undefined) fields.set("prices", "Enter an amount like 29.00.");
      if (maxText && max === undefined) fields.set("max_order_value", "Enter an amount like 500.00.");
      showProblem(form, {
        code: Code.InvalidArgument,
        message: "Please correct the highlighted fields.",
        fields,
        aborted: false,
      });
      return;
    }
    void submitting(form, async () => {
      await ctx.api.billing.createPlan({
        name: field(form, "name"),
        description: field(form, "description"),
        currency,
        prices: [{ interval: PlanInterval.MONTH, amount: { amountMinor: price, currency } }],
        trialDays: Number(field(form, "trial_days") || 0),
        ...(max !== undefined ? { maxOrderValue: { amountMinor: max, currency } } : {}),
        idempotencyKey: crypto.randomUUID(),
      });
      reload();
    });
  });
  return form;
}
