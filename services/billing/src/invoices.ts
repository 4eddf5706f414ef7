import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type BillingService,
  GetInvoiceDocumentResponseSchema,
  GetInvoiceResponseSchema,
  InvoiceDocumentFormat,
  ListInvoicesResponseSchema,
  VoidInvoiceRequestSchema,
  VoidInvoiceResponseSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { InvoiceVoidedSchema } from "@trellis/gen/trellis/billing/v1/events_pb.js";
import { invoiceStatusName, money, toInvoice, ts } from "./convert.ts";
import { emit } from "./events.ts";
import {
  customerMutation,
  type HandlerDeps,
  nextPage,
  notFound,
  pageOf,
  precondition,
  tenantOf,
} from "./handler-kit.ts";
import { renderInvoiceHtml } from "./invoice-document.ts";
import { renderInvoicePdf } from "./invoice-pdf.ts";
import { emitUpdated } from "./lifecycle.ts";
import type { InvoiceStatusName, SubscriptionRow } from "./store.ts";

// Only a finalized invoice nobody paid can be voided (Stripe's rule): why each other status cannot.
const notVoidable: Partial<Record<InvoiceStatusName, string>> = {
  draft: "the invoice is a draft: it is not finalized yet",
  paid: "the invoice is paid: refund the charge instead",
  void: "the invoice is already void",
};

/** ListInvoices, GetInvoice, GetInvoiceDocument and VoidInvoice. */
export function createInvoiceHandlers(
  deps: HandlerDeps & { readonly sellerName: string },
): Pick<
  ServiceImpl<typeof BillingService>,
  "listInvoices" | "getInvoice" | "getInvoiceDocument" | "voidInvoice"
> {
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

    async voidInvoice(req, ctx) {
      const tenantId = tenantOf(ctx);
      const call = {
        tenantId,
        key: req.idempotencyKey,
        method: "VoidInvoice",
        requestSchema: VoidInvoiceRequestSchema,
        request: req,
        responseSchema: VoidInvoiceResponseSchema,
      };
      // A dunning retry due by now runs first: the invoice is voided in the state the clock says.
      return customerMutation(deps, call, async (s, tx, { now }) => {
        const invoice = await s.getInvoice(tenantId, req.invoiceId, true);
        if (!invoice) throw notFound("invoice");
        const refusal = notVoidable[invoice.status];
        if (refusal) throw precondition(refusal);
        const voided = await s.voidInvoice(invoice.id, now);
        if (!voided) throw new Error(`invoice ${invoice.id} could not be voided from ${invoice.status}`);
        await emit(tx, InvoiceVoidedSchema, {
          tenantId,
          invoiceId: voided.id,
          number: voided.number ?? 0n,
          subscriptionId: voided.subscription_id,
          planId: voided.plan_id,
          total: money(voided.total_minor, voided.currency),
          reason: req.reason,
          occurredAt: ts(now),
        });
        const sub = await s.getSubscription(tenantId, voided.subscription_id, true);
        if (sub?.status === "past_due" && (await s.openInvoiceCount(sub.id, voided.id)) === 0) {
          const after: SubscriptionRow = { ...sub, status: "active" };
          await s.updateSubscription(after);
          await emitUpdated(tx, sub, after, now);
        }
        return create(VoidInvoiceResponseSchema, {
          invoice: toInvoice(voided, await s.linesOf([voided.id])),
        });
      });
    },
  };
}
