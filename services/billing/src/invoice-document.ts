import { amountDue } from "./convert.ts";
import { formatMoney } from "./money.ts";
import { formatDay } from "./periods.ts";
import type { InvoiceLineRow, InvoiceRow } from "./store.ts";

const escapes: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Text made safe for HTML element content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => escapes[c] ?? c);
}

/** What a document shows besides the invoice: who billed whom. */
export interface DocumentParty {
  readonly sellerName: string;
  readonly customerName: string;
}

/** The invoice's title: "Invoice 42", or "Draft invoice" before it has a number. */
export function invoiceTitle(invoice: InvoiceRow): string {
  return invoice.number === null ? "Draft invoice" : `Invoice ${invoice.number}`;
}

/** A self-contained HTML page (inline CSS, no scripts, no external resources) for an invoice. */
export function renderInvoiceHtml(
  invoice: InvoiceRow,
  lines: readonly InvoiceLineRow[],
  party: DocumentParty,
): string {
  const m = (v: bigint) => escapeHtml(formatMoney(v, invoice.currency));
  const subtotal =
    invoice.status === "draft" ? lines.reduce((s, l) => s + l.amount_minor, 0n) : invoice.subtotal_minor;
  const rows = lines
    .map(
      (l) =>
        `      <tr><td>${escapeHtml(l.description)}</td><td class="n">${l.quantity}</td>` +
        `<td class="n">${m(l.unit_amount_minor)}</td><td class="n">${m(l.amount_minor)}</td></tr>`,
    )
    .join("\n");
  const taxPercent = `${Math.trunc(invoice.tax_rate_bps / 100)}.${String(invoice.tax_rate_bps % 100).padStart(2, "0")}%`;
  const title = escapeHtml(invoiceTitle(invoice));
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>${title}</title>
  <style>
    body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
    table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
    th, td { border-bottom: 1px solid #ddd; padding: .4rem .6rem; text-align: left; }
    td.n, th.n { text-align: right; white-space: nowrap; }
    tfoot td { border: none; }
    .status { text-transform: uppercase; font-weight: bold; }
  </style>
</head>
<body>
  <h1>${title}</h1>
  <p>From ${escapeHtml(party.sellerName)} to ${escapeHtml(party.customerName)}</p>
  <p>Status: <span class="status">${escapeHtml(invoice.status)}</span><br>
     Period: ${escapeHtml(formatDay(invoice.period_start))} – ${escapeHtml(formatDay(invoice.period_end))}<br>
     Invoice id: ${escapeHtml(invoice.id)}</p>
  <table>
    <thead><tr><th>Description</th><th class="n">Qty</th><th class="n">Unit price</th><th class="n">Amount</th></tr></thead>
    <tbody>
${rows}
    </tbody>
    <tfoot>
      <tr><td colspan="3" class="n">Subtotal</td><td class="n">${m(subtotal)}</td></tr>
      <tr><td colspan="3" class="n">Tax (${taxPercent})</td><td class="n">${m(invoice.tax_minor)}</td></tr>
      <tr><td colspan="3" class="n"><strong>Total</strong></td><td class="n"><strong>${m(invoice.status === "draft" ? subtotal : invoice.total_minor)}</strong></td></tr>
      <tr><td colspan="3" class="n">Paid</td><td class="n">${m(invoice.amount_paid_minor)}</td></tr>
      <tr><td colspan="3" class="n">Amount due</td><td class="n">${m(amountDue(invoice))}</td></tr>
    </tfoot>
  </table>
</body>
</html>
`;
}
