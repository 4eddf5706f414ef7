import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Plan,
  PlanInterval,
  type Subscription,
  SubscriptionStatus,
  SubscriptionStatusSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import type { Page, PageContext } from "../app.ts";
import { checked, field, h, replace } from "../dom.ts";
import { enumLabel, formatDate, formatMoney, sandboxCards } from "../format.ts";
import { problemNote, submitting } from "../forms.ts";
import { claimsOf } from "../session.ts";
import { invoicesSection } from "./invoices.ts";
import { planForm } from "./plan-form.ts";

const intervals = [
  { value: PlanInterval.MONTH, label: "monthly" },
  { value: PlanInterval.YEAR, label: "yearly" },
];

/** The tenant's subscription and plan, plan changes, payment methods and invoices. */
export const billingPage: Page = (ctx) => {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const root = h("section", { "data-page": "billing" }, h("h1", {}, "Billing"), body);
  const reload = () => void render(ctx, body, reload);
  reload();
  return root;
};

async function render(ctx: PageContext, body: HTMLElement, reload: () => void): Promise<void> {
  try {
    const [plans, subscription, methods] = await Promise.all([
      ctx.api.billing.listPlans({ page: { pageSize: 100 } }, { signal: ctx.signal }).then((r) => r.plans),
      ctx.api.billing.getSubscription({}, { signal: ctx.signal }).then(
        (r) => r.subscription,
        (e) => {
          if (ConnectError.from(e).code === Code.NotFound) return undefined;
          throw e;
        },
      ),
      ctx.api.billing
        .listPaymentMethods({ page: { pageSize: 50 } }, { signal: ctx.signal })
        .then((r) => r.paymentMethods),
    ]);
    const canManagePlans = claimsOf(ctx.session.get()?.accessToken ?? "")?.permissions.has(
      "billing.plans.manage",
    );
    replace(
      body,
      subscriptionCard(ctx, subscription, plans, reload),
      h(
        "div",
        { class: "card" },
        h("h2", {}, "Payment methods"),
        methods.length === 0
          ? h("p", { class: "muted" }, "None yet. A plan without a trial needs one.")
          : h(
              "ul",
              {},
              methods.map((m) =>
                h(
                  "li",
                  {},
                  `${m.brand} •••• ${m.last4}, expires ${m.expMonth}/${m.expYear}`,
                  m.isDefault ? h("span", { class: "tag" }, "default") : "",
                ),
              ),
            ),
        attachForm(ctx, reload),
      ),
      invoicesSection(ctx),
      canManagePlans
        ? h(
            "details",
            { class: "card" },
            h("summary", {}, "Add a plan to the catalog (admin)"),
            planForm(ctx, reload),
          )
        : "",
    );
  } catch (error) {
    const note = problemNote(error);
    if (note) replace(body, note);
  }
}

function priceText(plan: Plan): string {
  return plan.prices
    .map((p) => `${formatMoney(p.amount)} / ${p.interval === PlanInterval.YEAR ? "year" : "month"}`)
    .join(", ");
}

function subscriptionCard(
  ctx: PageContext,
  sub: Subscription | undefined,
  plans: Plan[],
  reload: () => void,
) {
  const card = h("div", { class: "card", "data-section": "subscription" }, h("h2", {}, "Subscription"));
  if (plans.length === 0) {
    card.append(h("p", { class: "muted" }, "The plan catalog is empty."));
    return card;
  }
  const current = sub && plans.find((p) => p.planId === sub.planId);
  if (sub) {
    const status = enumLabel(SubscriptionStatusSchema.values.find((v) => v.number === sub.status)?.localName);
    card.append(
      h(
        "p",
        { class: "big", "data-plan": current?.name ?? sub.planId },
        current?.name ?? sub.planId,
        " ",
        h("span", { class: `status status-${status.replace(/ /g, "-")}` }, status),
      ),
      h(
        "p",
        { class: "muted" },
        `${current ? priceText(current) : ""} · current period ${formatDate(sub.currentPeriodStart)} – ${formatDate(sub.currentPeriodEnd)}`,
        sub.trialEndsAt ? ` · trial ends ${formatDate(sub.trialEndsAt)}` : "",
        sub.cancelAtPeriodEnd ? " · ends at the end of this period" : "",
      ),
    );
  } else {
    card.append(h("p", { class: "muted" }, "No subscription yet. Pick a plan:"));
  }
  const form = h(
    "form",
    { class: "grid", "data-form": sub ? "change-plan" : "subscribe" },
    h(
      "label",
      {},
      "Plan",
      h(
        "select",
        { name: "plan_id" },
        plans.map((p) =>
          h(
            "option",
            { value: p.planId, selected: p.planId === sub?.planId },
            `${p.name} — ${priceText(p)}${p.trialDays ? `, ${p.trialDays}-day trial` : ""}`,
          ),
        ),
      ),
    ),
    h(
      "label",
      {},
      "Billed",
      h(
        "select",
        { name: "interval" },
        intervals.map((i) =>
          h("option", { value: String(i.value), selected: i.value === sub?.interval }, i.label),
        ),
      ),
    ),
    h("button", { type: "submit" }, sub ? "Change plan" : "Subscribe"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const planId = field(form, "plan_id");
    const interval = Number(field(form, "interval")) as PlanInterval;
    void submitting(form, async () => {
      const idempotencyKey = crypto.randomUUID();
      if (sub)
        await ctx.api.billing.changePlan({
          subscriptionId: sub.subscriptionId,
          planId,
          interval,
          idempotencyKey,
        });
      else await ctx.api.billing.createSubscription({ planId, interval, idempotencyKey });
      reload();
    });
  });
  card.append(form);
  if (sub && !sub.cancelAtPeriodEnd && sub.status !== SubscriptionStatus.CANCELED) {
    const cancel = h(
      "form",
      { class: "inline" },
      h("button", { type: "submit", class: "secondary" }, "Cancel at the end of the period"),
    );
    cancel.addEventListener("submit", (event) => {
      event.preventDefault();
      void submitting(cancel, async () => {
        await ctx.api.billing.cancelSubscription({
          subscriptionId: sub.subscriptionId,
          atPeriodEnd: true,
          idempotencyKey: crypto.randomUUID(),
        });
        reload();
      });
    });
    card.append(cancel);
  }
  return card;
}

function attachForm(ctx: PageContext, reload: () => void): HTMLFormElement {
  const form = h(
    "form",
    { class: "grid", "data-form": "attach-payment-method" },
    h(
      "label",
      {},
      "Card (sandbox)",
      h(
        "select",
        { name: "token" },
        sandboxCards.map((c) => h("option", { value: c.token }, c.label)),
      ),
    ),
    h(
      "label",
      { class: "check" },
      h("input", { type: "checkbox", name: "set_default", checked: true }),
      "Make default",
    ),
    h("button", { type: "submit" }, "Add card"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submitting(form, async () => {
      await ctx.api.billing.attachPaymentMethod({
        token: field(form, "token"),
        setDefault: checked(form, "set_default"),
        idempotencyKey: crypto.randomUUID(),
      });
      reload();
    });
  });
  return form;
}
