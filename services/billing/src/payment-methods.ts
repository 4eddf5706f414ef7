import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  AttachPaymentMethodRequestSchema,
  AttachPaymentMethodResponseSchema,
  type BillingService,
  ListPaymentMethodsResponseSchema,
} from "@trellis/gen/trellis/billing/v1/billing_pb.js";
import { toPaymentMethod } from "./convert.ts";
import { type HandlerDeps, idempotent, nextPage, pageOf, tenantOf } from "./handler-kit.ts";
import { newId } from "./ids.ts";
import { UnknownPaymentMethodError } from "./provider.ts";

/** AttachPaymentMethod and ListPaymentMethods. */
export function createPaymentMethodHandlers(
  deps: HandlerDeps,
): Pick<ServiceImpl<typeof BillingService>, "attachPaymentMethod" | "listPaymentMethods"> {
  const { store, provider } = deps;
  return {
    async attachPaymentMethod(req, ctx) {
      const tenantId = tenantOf(ctx);
      if (req.token === "") throw new ConnectError("token is required", Code.InvalidArgument);
      return idempotent(
        deps,
        {
          tenantId,
          key: req.idempotencyKey,
          method: "AttachPaymentMethod",
          requestSchema: AttachPaymentMethodRequestSchema,
          request: req,
          responseSchema: AttachPaymentMethodResponseSchema,
        },
        async (s, _tx, { now }) => {
          const customer = await s.lockCustomer(tenantId);
          let card: Awaited<ReturnType<typeof provider.attach>>;
          try {
            card = await provider.attach({
              tenantId,
              token: req.token,
              idempotencyKey: `${tenantId}:${req.idempotencyKey}`,
            });
          } catch (error) {
            if (error instanceof UnknownPaymentMethodError) {
              throw new ConnectError("unknown payment method token", Code.InvalidArgument);
            }
            throw error;
          }
          const makeDefault = req.setDefault || customer.defaultPaymentMethodId === null;
          const row = {
            id: newId("pm"),
            tenant_id: tenantId,
            provider_ref: card.ref,
            brand: card.brand,
            last4: card.last4,
            exp_month: card.expMonth,
            exp_year: card.expYear,
            created_at: now,
          };
          await s.insertPaymentMethod(row, makeDefault);
          return create(AttachPaymentMethodResponseSchema, {
            paymentMethod: toPaymentMethod({ ...row, is_default: makeDefault }),
          });
        },
      );
    },

    async listPaymentMethods(req, ctx) {
      const tenantId = tenantOf(ctx);
      const { size, after } = pageOf(req.page);
      const page = nextPage(await store.listPaymentMethods(tenantId, after, size + 1), size);
      return create(ListPaymentMethodsResponseSchema, {
        paymentMethods: page.rows.map(toPaymentMethod),
        page: { nextPageToken: page.token },
      });
    },
  };
}
