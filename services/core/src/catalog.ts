import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import type { Db } from "@trellis/kit/db.js";
import { productToProto } from "./convert.js";
import type { CoreEvents } from "./events.js";
import { decodePageToken, encodePageToken, filterFingerprint, pageSize } from "./page-token.js";
import { getProduct, insertProduct, listProducts, updateProduct } from "./store.js";

type CatalogHandlers = Pick<
  ServiceImpl<typeof CoreService>,
  "createProduct" | "updateProduct" | "getProduct" | "listProducts"
>;

/** The catalog RPCs: products per tenant, SKU unique in the tenant, optimistic versions on update. */
export function createCatalogHandlers(deps: { sql: Db; events: CoreEvents }): CatalogHandlers {
  const { sql, events } = deps;
  return {
    async createProduct(req, ctx) {
      const { tenantId } = requirePrincipal(ctx);
      const price = req.price;
      if (!price) throw new ConnectError("price is required", Code.InvalidArgument);
      const row = await insertProduct(sql, tenantId, {
        sku: req.sku,
        name: req.name,
        description: req.description,
        priceMinor: price.amountMinor,
        currency: price.currency,
        active: req.active,
        lowStockThreshold: req.lowStockThreshold,
      });
      return { product: productToProto(row) };
    },

    async updateProduct(req, ctx) {
      const { tenantId } = requirePrincipal(ctx);
      const row = await updateProduct(
        sql,
        events,
        tenantId,
        req.productId,
        {
          sku: req.sku,
          name: req.name,
          description: req.description,
          priceMinor: req.price?.amountMinor,
          currency: req.price?.currency,
          active: req.active,
          lowStockThreshold: req.lowStockThreshold,
        },
        req.expectedVersion,
      );
      return { product: productToProto(row) };
    },

    async getProduct(req, ctx) {
      const { tenantId } = requirePrincipal(ctx);
      const row = await getProduct(sql, tenantId, req.productId);
      if (!row) throw new ConnectError("product not found", Code.NotFound);
      return { product: productToProto(row) };
    },

    async listProducts(req, ctx) {
      const { tenantId } = requirePrincipal(ctx);
      const filters = { skuPrefix: req.skuPrefix, nameContains: req.nameContains, active: req.active };
      const fingerprint = filterFingerprint([
        "products",
        filters.skuPrefix,
        filters.nameContains,
        filters.active ?? null,
      ]);
      const after = decodePageToken(req.page?.pageToken ?? "", fingerprint);
      const size = pageSize(req.page?.pageSize ?? 0);
      const rows = await listProducts(sql, tenantId, filters, after, size + 1);
      const page = rows.slice(0, size);
      const last = page.at(-1);
      return {
        products: page.map(productToProto),
        page: {
          nextPageToken: rows.length > size && last ? encodePageToken(last.product_id, fingerprint) : "",
        },
      };
    },
  };
}
