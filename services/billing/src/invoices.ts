import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type BillingService,
  GetInvoiceDocumentResponseSchema,
  GetInvoiceResponseSchema,
  InvoiceDocumentFormat,
  ListInvoicesResponseSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { invoiceStatusName, toInvoice } from "./convert.ts";
import { type HandlerDeps, nextPage, notFound, pageOf, tenantOf } from "./handler-kit.ts";
import { renderInvoiceHtml } from "./invoice-document.ts";
import { renderInvoicePdf } from "./invoice-pdf.ts";

/** ListInvoices, GetInvoice and GetInvoiceDocument. */
export function createInvoiceHandlers(
  deps: HandlerDeps & { readonly sellerName: string },
): Pick<ServiceImpl<typeof BillingService>, "listInvoices" | "getInvoice" | "getInvoiceDocument"> {
  const { store } = deps;
  return {
    async listInvoices(req, ctx) {
      const tenantId = tenantOf(ctx);
      const { size, after } = pageOf(req.page);
      const rows = await store.listInvoices(tenantId, invoiceStatusName(req.status), after, size + 1);
      const page = nextPage(rows, size);
      const lines = await store.linesOf(page.rows.map((i) => i.id));
      return create(ListInvoicesResponseSchema, {
        invoices: page.rows.map((i) =>
          toInvoice(
            i,
            lines.filter((l) => l.invoice_id === i.id),
          ),
        ),
        page: { nextPageToken: page.token },
      });
    },

    async getInvoice(req, ctx) {
      const invoice = await store.getInvoice(tenantOf(ctx), req.invoiceId);
      if (!invoice) throw notFound("invoice");
      return create(GetInvoiceResponseSchema, {
        invoice: toInvoice(invoice, await store.linesOf([invoice.id])),
      });
    },

    async getInvoiceDocument(req, ctx) {
      const tenantId = tenantOf(ctx);
      const invoice = await store.getInvoice(tenantId, req.invoiceId);
      if (!invoice) throw notFound("invoice");
      const lines = await store.linesOf([invoice.id]);
      const party = {
        sellerName: deps.sellerName,
        customerName: (await store.customerName(tenantId)) || tenantId,
      };
      const name = `invoice-${invoice.number ?? "draft"}`;
      if (req.format === InvoiceDocumentFormat.PDF) {
        return create(GetInvoiceDocumentResponseSchema, {
          contentType: "application/pdf",
          content: await renderInvoicePdf(invoice, lines, party),
          filename: `${name}.pdf`,
        });
      }
      return create(GetInvoiceDocumentResponseSchema, {
        contentType: "text/html; charset=utf-8",
        content: new TextEncoder().encode(renderInvoiceHtml(invoice, lines, party)),
        filename: `${name}.html`,
      });
    },
  };
}
