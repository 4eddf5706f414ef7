import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { CoreService } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import type { Db } from "@trellis/kit/db.js";
import { stockToProto } from "./convert.js";
import type { CoreEvents } from "./events.js";
import { adjustStock, getStock } from "./store.js";

type InventoryHandlers = Pick<ServiceImpl<typeof CoreService>, "adjustStock" | "getStock">;

/** The inventory RPCs: idempotent stock adjustments that never take on-hand below what orders hold. */
export function createInventoryHandlers(deps: { sql: Db; events: CoreEvents }): InventoryHandlers {
  const { sql, events } = deps;
  return {
    async adjustStock(req, ctx) {
      const { tenantId } = requirePrincipal(ctx);
      const { stock, replayed } = await adjustStock(sql, events, {
        tenantId,
        productId: req.productId,
        delta: req.delta,
        reason: req.reason,
        key: req.idempotencyKey,
      });
      return { stock: stockToProto(stock), replayed };
    },

    async getStock(req, ctx) {
      const { tenantId } = requirePrincipal(ctx);
      const row = await getStock(sql, tenantId, req.productId);
      if (!row) throw new ConnectError("product not found", Code.NotFound);
      return { stock: stockToProto(row) };
    },
  };
}
