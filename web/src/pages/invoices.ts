import {
  type Invoice,
  InvoiceDocumentFormat,
  InvoiceStatus,
  InvoiceStatusSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import type { PageContext } from "../app.ts";
import { h, replace } from "../dom.ts";
import { enumLabel, formatDate, formatMoney } from "../format.ts";
import { problemNote } from "../forms.ts";

/** The tenant's invoices, each viewable as its HTML document or downloadable as PDF. */
export function invoicesSection(ctx: PageContext): HTMLElement {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const viewer = h("div", { class: "viewer" });
  void load(ctx, list, viewer);
  return h("div", { class: "card", "data-section": "invoices" }, h("h2", {}, "Invoices"), list, viewer);
}

async function load(ctx: PageContext, list: HTMLElement, viewer: HTMLElement): Promise<void> {
  try {
    const { invoices } = await ctx.api.billing.listInvoices(
      { page: { pageSize: 50 } },
      { signal: ctx.signal },
    );
    if (invoices.length === 0) {
      replace(
        list,
        h("p", { class: "muted" }, "No invoices yet. They appear when a subscription is billed."),
      );
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
            ["Number", "Status", "Period", "Total", "Due", ""].map((t) => h("th", {}, t)),
          ),
        ),
        h(
          "tbody",
          {},
          invoices.map((inv) => row(ctx, inv, viewer)),
        ),
      ),
    );
  } catch (error) {
    const note = problemNote(error);
    if (note) replace(list, note);
  }
}

function statusName(status: InvoiceStatus): string {
  return enumLabel(InvoiceStatusSchema.values.find((v) => v.number === status)?.localName);
}

function row(ctx: PageContext, inv: Invoice, viewer: HTMLElement): HTMLElement {
  const view = h("button", { type: "button", "data-action": "view-invoice" }, "View");
  view.addEventListener("click", () => void showDocument(ctx, inv, viewer));
  const pdf = h("button", { type: "button", class: "secondary" }, "PDF");
  pdf.addEventListener("click", () => void download(ctx, inv, viewer));
  return h(
    "tr",
    { "data-invoice": inv.invoiceId },
    h("td", {}, inv.status === InvoiceStatus.DRAFT ? "draft" : `#${inv.number}`),
    h(
      "td",
      {},
      h(
        "span",
        { class: `status status-${statusName(inv.status).replace(/ /g, "-")}` },
        statusName(inv.status),
      ),
    ),
    h("td", {}, `${formatDate(inv.periodStart)} – ${formatDate(inv.periodEnd)}`),
    h("td", { class: "num" }, formatMoney(inv.total)),
    h("td", { class: "num" }, formatMoney(inv.amountDue)),
    h("td", {}, view, " ", pdf),
  );
}

async function showDocument(ctx: PageContext, inv: Invoice, viewer: HTMLElement): Promise<void> {
  replace(viewer, h("p", { class: "muted" }, "Loading the invoice…"));
  try {
    const doc = await ctx.api.billing.getInvoiceDocument(
      { invoiceId: inv.invoiceId, format: InvoiceDocumentFormat.HTML },
      { signal: ctx.signal },
    );
    // srcdoc with an empty sandbox: the document can run no script and reach nothing of the console.
    const frame = h("iframe", {
      title: `Invoice ${inv.number}`,
      sandbox: "",
      srcdoc: new TextDecoder().decode(doc.content),
      "data-invoice-document": inv.invoiceId,
    });
    replace(viewer, h("h3", {}, doc.filename || `Invoice ${inv.number}`), frame);
  } catch (error) {
    const note = problemNote(error);
    if (note) replace(viewer, note);
  }
}

async function download(ctx: PageContext, inv: Invoice, viewer: HTMLElement): Promise<void> {
  try {
    const doc = await ctx.api.billing.getInvoiceDocument(
      { invoiceId: inv.invoiceId, format: InvoiceDocumentFormat.PDF },
      { signal: ctx.signal },
    );
    const url = URL.createObjectURL(
      new Blob([doc.content as Uint8Array<ArrayBuffer>], { type: doc.contentType || "application/pdf" }),
    );
    const a = h("a", { href: url, download: doc.filename || `invoice-${inv.number}.pdf` });
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    const note = problemNote(error);
    if (note) replace(viewer, note);
  }
}
