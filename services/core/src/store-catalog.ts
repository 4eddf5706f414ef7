import { Code, ConnectError } from "@connectrpc/connect";
import type { Db } from "@trellis/kit/db.js";
import type { CoreEvents } from "./events.js";
import { newProductId } from "./ids.js";
import { refreshLowStock, type Sql } from "./store-inventory.js";

/** A product as stored. */
export interface ProductRow {
  readonly tenant_id: string;
  readonly product_id: string;
  readonly sku: string;
  readonly name: string;
  readonly description: string;
  readonly price_minor: bigint;
  readonly currency: string;
  readonly active: boolean;
  readonly low_stock_threshold: number;
  readonly version: bigint;
  readonly created_at: Date;
  readonly updated_at: Date;
}

/** A new product. */
export interface NewProduct {
  readonly sku: string;
  readonly name: string;
  readonly description: string;
  readonly priceMinor: bigint;
  readonly currency: string;
  readonly active: boolean;
  readonly lowStockThreshold: number;
}

/** The fields of an update; undefined leaves a field alone. */
export interface ProductPatch {
  readonly sku?: string;
  readonly name?: string;
  readonly description?: string;
  readonly priceMinor?: bigint;
  readonly currency?: string;
  readonly active?: boolean;
  readonly lowStockThreshold?: number;
}

/** ListProducts filters. */
export interface ProductFilters {
  readonly skuPrefix: string;
  readonly nameContains: string;
  readonly active?: boolean;
}

const skuTaken = () => new ConnectError("a product with this SKU already exists", Code.AlreadyExists);

function isUniqueViolation(error: unknown, constraint: string): boolean {
  const e = error as { code?: string; constraint_name?: string };
  return e?.code === "23505" && e.constraint_name === constraint;
}

/** Creates a product with zero stock; already_exists when the tenant uses the SKU. */
export async function insertProduct(sql: Db, tenantId: string, p: NewProduct): Promise<ProductRow> {
  try {
    return await sql.begin(async (tx) => {
      const [row] = await tx<ProductRow[]>`
        insert into products (tenant_id, product_id, sku, name, description, price_minor, currency, active,
                              low_stock_threshold)
        values (${tenantId}, ${newProductId()}, ${p.sku}, ${p.name}, ${p.description}, ${p.priceMinor.toString()},
                ${p.currency}, ${p.active}, ${p.lowStockThreshold})
        returning *`;
      if (!row) throw new Error("insert returned no row");
      await tx`insert into stock (tenant_id, product_id) values (${tenantId}, ${row.product_id})`;
      return row;
    });
  } catch (error) {
    if (isUniqueViolation(error, "products_tenant_sku_key")) throw skuTaken();
    throw error;
  }
}

/**
 * Applies a patch. not_found for an unknown product, failed_precondition when expectedVersion is
 * given and differs, already_exists when the new SKU is taken. A changed threshold re-evaluates
 * the low-stock state (and may publish StockLow).
 */
export async function updateProduct(
  sql: Db,
  events: CoreEvents,
  tenantId: string,
  productId: string,
  patch: ProductPatch,
  expectedVersion: bigint | undefined,
): Promise<ProductRow> {
  try {
    return await sql.begin(async (tx) => {
      const [current] = await tx<ProductRow[]>`
        select * from products where tenant_id = ${tenantId} and product_id = ${productId} for update`;
      if (!current) throw new ConnectError("product not found", Code.NotFound);
      if (expectedVersion !== undefined && current.version !== expectedVersion) {
        throw new ConnectError("the product changed since that version", Code.FailedPrecondition);
      }
      const [row] = await tx<ProductRow[]>`
        update products set
          sku = ${patch.sku ?? current.sku},
          name = ${patch.name ?? current.name},
          description = ${patch.description ?? current.description},
          price_minor = ${(patch.priceMinor ?? current.price_minor).toString()},
          currency = ${patch.currency ?? current.currency},
          active = ${patch.active ?? current.active},
          low_stock_threshold = ${patch.lowStockThreshold ?? current.low_stock_threshold},
          version = version + 1,
          updated_at = now()
        where tenant_id = ${tenantId} and product_id = ${productId}
        returning *`;
      if (!row) throw new Error("update returned no row");
      if (row.low_stock_threshold !== current.low_stock_threshold || row.sku !== current.sku) {
        await refreshLowStock(tx, events, tenantId, productId);
      }
      return row;
    });
  } catch (error) {
    if (isUniqueViolation(error, "products_tenant_sku_key")) throw skuTaken();
    throw error;
  }
}

/** One product of the tenant, or undefined. */
export async function getProduct(
  sql: Sql,
  tenantId: string,
  productId: string,
): Promise<ProductRow | undefined> {
  const [row] = await sql<ProductRow[]>`
    select * from products where tenant_id = ${tenantId} and product_id = ${productId}`;
  return row;
}

/** The tenant's products with these ids (missing ones are simply absent). */
export async function getProducts(
  sql: Sql,
  tenantId: string,
  productIds: readonly string[],
): Promise<ProductRow[]> {
  return sql<ProductRow[]>`
    select * from products where tenant_id = ${tenantId} and product_id = any(${[...productIds]}::text[])`;
}

/** Up to limit products after `after` (by id, oldest first) matching the filters. */
export async function listProducts(
  sql: Sql,
  tenantId: string,
  filters: ProductFilters,
  after: string | undefined,
  limit: number,
): Promise<ProductRow[]> {
  return sql<ProductRow[]>`
    select * from products
    where tenant_id = ${tenantId}
      ${after === undefined ? sql`` : sql`and product_id > ${after}`}
      ${filters.skuPrefix ? sql`and starts_with(sku, ${filters.skuPrefix})` : sql``}
      ${filters.nameContains ? sql`and strpos(lower(name), lower(${filters.nameContains})) > 0` : sql``}
      ${filters.active === undefined ? sql`` : sql`and active = ${filters.active}`}
    order by product_id
    limit ${limit}`;
}
