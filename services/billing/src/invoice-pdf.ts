import PDFDocument from "pdfkit";
import { amountDue } from "./convert.ts";
import { type DocumentParty, invoiceTitle } from "./invoice-document.ts";
import { formatMoney } from "./money.ts";
import { formatDay } from "./periods.ts";
import type { InvoiceLineRow, InvoiceRow } from "./store.ts";

/** An A4 PDF of an invoice (pdfkit, built-in Helvetica: no font files, no network). */
export function renderInvoicePdf(
  invoice: InvoiceRow,
  lines: readonly InvoiceLineRow[],
  party: DocumentParty,
): Promise<Uint8Array> {
  const doc = new PDFDocument({
    size: "A4",
    margin: 50,
    info: {
      Title: invoiceTitle(invoice),
      Author: party.sellerName,
      CreationDate: invoice.finalized_at ?? invoice.created_at,
    },
  });
  const chunks: Buffer[] = [];
  const done = new Promise<Uint8Array>((resolve, reject) => {
    doc.on("data", (chunk: Buffer) => chunks.push(chunk));
    doc.on("end", () => resolve(new Uint8Array(Buffer.concat(chunks))));
    doc.on("error", reject);
  });
  const m = (v: bigint) => formatMoney(v, invoice.currency);
  const subtotal =
    invoice.status === "draft" ? lines.reduce((s, l) => s + l.amount_minor, 0n) : invoice.subtotal_minor;
  const total = invoice.status === "draft" ? subtotal : invoice.total_minor;

  doc.font("Helvetica-Bold").fontSize(20).text(invoiceTitle(invoice));
  doc.moveDown(0.5).font("Helvetica").fontSize(10);
  doc.text(`From ${party.sellerName} to ${party.customerName}`);
  doc.text(`Status: ${invoice.status.toUpperCase()}`);
  doc.text(`Period: ${formatDay(invoice.period_start)} – ${formatDay(invoice.period_end)}`);
  doc.text(`Invoice id: ${invoice.id}`);
  doc.moveDown();

  const columns = { description: 50, quantity: 330, unit: 380, amount: 470 };
  const row = (cells: [string, string, string, string], bold = false) => {
    const y = doc.y;
    doc.font(bold ? "Helvetica-Bold" : "Helvetica");
    doc.text(cells[0], columns.description, y, { width: 270 });
    const bottom = doc.y;
    doc.text(cells[1], columns.quantity, y, { width: 40, align: "right" });
    doc.text(cells[2], columns.unit, y, { width: 80, align: "right" });
    doc.text(cells[3], columns.amount, y, { width: 75, align: "right" });
    doc.x = columns.description;
    doc.y = Math.max(bottom, doc.y) + 4;
  };
  row(["Description", "Qty", "Unit price", "Amount"], true);
  for (const l of lines) row([l.description, String(l.quantity), m(l.unit_amount_minor), m(l.amount_minor)]);
  doc.moveDown();
  const rate = `${Math.trunc(invoice.tax_rate_bps / 100)}.${String(invoice.tax_rate_bps % 100).padStart(2, "0")}%`;
  row(["Subtotal", "", "", m(subtotal)]);
  row([`Tax (${rate})`, "", "", m(invoice.tax_minor)]);
  row(["Total", "", "", m(total)], true);
  row(["Paid", "", "", m(invoice.amount_paid_minor)]);
  row(["Amount due", "", "", m(amountDue(invoice))], true);
  doc.end();
  return done;
}
