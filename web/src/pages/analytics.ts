import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Page, PageContext } from "../app.ts";
import { createLiveChart, drawFunnel } from "../charts.ts";
import { field, h, replace } from "../dom.ts";
import { describeError } from "../errors.ts";
import { submitting } from "../forms.ts";
import { claimsOf } from "../session.ts";

const defaultSteps = [
  "trellis.auth.user.logged_in",
  "trellis.core.order.created",
  "trellis.core.order.confirmed",
];

/** A live chart of the tenant's events (WatchMetrics stream) and a funnel report. */
export const analyticsPage: Page = (ctx) => {
  const chartBox = h("div", { class: "chart", "data-chart": "live" });
  const status = h("span", { class: "muted", "data-live-status": "connecting" }, "connecting…");
  const total = h("strong", { "data-live-total": "0" }, "0");
  const track = h(
    "form",
    { class: "inline", "data-form": "track" },
    h("button", { type: "submit" }, "Send a test event"),
  );
  track.addEventListener("submit", (event) => {
    event.preventDefault();
    const userId = claimsOf(ctx.session.get()?.accessToken ?? "")?.userId || "console";
    void submitting(track, async () => {
      await ctx.api.analytics.track({
        event: {
          eventId: crypto.randomUUID(),
          name: "console.test_event",
          actor: { case: "userId", value: userId },
        },
      });
    });
  });
  const funnelBox = h("div", {});
  const root = h(
    "section",
    { "data-page": "analytics" },
    h("h1", {}, "Analytics"),
    h(
      "div",
      { class: "card" },
      h("h2", {}, "Live events"),
      h("p", {}, "Events in the last minute: ", total, " · ", status, " ", track),
      chartBox,
    ),
    h("div", { class: "card" }, h("h2", {}, "Funnel"), funnelForm(ctx, funnelBox), funnelBox),
  );
  void watchLive(ctx, chartBox, total, status);
  return root;
};

async function watchLive(
  ctx: PageContext,
  box: HTMLElement,
  total: HTMLElement,
  status: HTMLElement,
): Promise<void> {
  const chart = createLiveChart(box, "events");
  // Every event counted since the page opened (the chart only keeps the last minute).
  let seen = 0;
  box.dataset.seen = "0";
  ctx.signal.addEventListener("abort", () => chart.destroy());
  const setStatus = (state: string, text: string) => {
    status.dataset.liveStatus = state;
    status.textContent = text;
  };
  let backoff = 500;
  while (!ctx.signal.aborted) {
    try {
      // The gateway caps a call at its maximum deadline; the loop reconnects when it passes.
      const stream = ctx.api.analytics.watchMetrics(
        { interval: { seconds: 1n } },
        { signal: ctx.signal, timeoutMs: 60_000 },
      );
      for await (const m of stream) {
        setStatus("live", "live");
        backoff = 500;
        chart.push((m.windowEnd ? timestampMs(m.windowEnd) : Date.now()) / 1000, Number(m.total));
        const sum = chart.values().reduce((a, b) => a + b, 0);
        total.textContent = String(sum);
        total.dataset.liveTotal = String(sum);
        seen += Number(m.total);
        box.dataset.seen = String(seen);
      }
    } catch (error) {
      if (ctx.signal.aborted) return;
      const code = ConnectError.from(error).code;
      if (code === Code.Unauthenticated) {
        if (await ctx.api.refresh().catch(() => false)) continue;
        return;
      }
      if (code !== Code.DeadlineExceeded) {
        setStatus("error", `${describeError(error).message} Reconnecting…`);
        await new Promise((resolve) => setTimeout(resolve, backoff));
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  }
}

function funnelForm(ctx: PageContext, box: HTMLElement): HTMLFormElement {
  let destroy: (() => void) | undefined;
  ctx.signal.addEventListener("abort", () => destroy?.());
  const form = h(
    "form",
    { class: "grid", "data-form": "funnel" },
    h(
      "label",
      { class: "wide" },
      "Steps (event names, in order, comma-separated)",
      h("input", { name: "steps", value: defaultSteps.join(", ") }),
    ),
    h(
      "label",
      {},
      "Within (hours)",
      h("input", { name: "window", type: "number", min: 1, max: 2160, value: "24" }),
    ),
    h(
      "label",
      {},
      "Over the last (days)",
      h("input", { name: "days", type: "number", min: 1, max: 366, value: "7" }),
    ),
    h("button", { type: "submit" }, "Show funnel"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const steps = field(form, "steps")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
    const now = Date.now();
    void submitting(form, async () => {
      const res = await ctx.api.analytics.funnel({
        steps,
        window: { seconds: BigInt(Number(field(form, "window") || 24) * 3600) },
        startTime: timestampFromMs(now - Number(field(form, "days") || 7) * 86_400_000),
        endTime: timestampFromMs(now + 60_000),
      });
      destroy?.();
      const rows = res.steps.map((s) => ({ name: s.eventName, users: Number(s.users) }));
      const chart = h("div", { class: "chart", "data-chart": "funnel" });
      replace(
        box,
        chart,
        h(
          "table",
          {},
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Step", "Users", "From previous", "From first"].map((t) => h("th", {}, t)),
            ),
          ),
          h(
            "tbody",
            {},
            res.steps.map((s) =>
              h(
                "tr",
                {},
                h("td", {}, h("code", {}, s.eventName)),
                h("td", { class: "num" }, String(s.users)),
                h("td", { class: "num" }, percent(s.conversionFromPrevious)),
                h("td", { class: "num" }, percent(s.conversionFromFirst)),
              ),
            ),
          ),
        ),
      );
      destroy = drawFunnel(chart, rows);
    });
  });
  return form;
}

function percent(x: number): string {
  return `${(x * 100).toFixed(1)} %`;
}
