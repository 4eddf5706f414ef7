import type { Db } from "@trellis/kit/db.js";
import { billingQueries } from "./store-billing.ts";
import { catalogQueries } from "./store-catalog.ts";
import { paymentQueries } from "./store-payments.ts";
import type { Q, Tx } from "./store-types.ts";

export type * from "./store-types.ts";

/** Every query of billing, bound to the pool or to one transaction. All SQL lives in store*.ts. */
export type Queries = ReturnType<typeof catalogQueries> &
  ReturnType<typeof billingQueries> &
  ReturnType<typeof paymentQueries>;

/** The store: queries on the pool, and transactions handing out the same queries bound to the tx. */
export interface Store extends Queries {
  /** Runs fn in one transaction; `tx` is for the outbox (events commit with the state). */
  transaction<T>(fn: (store: Queries, tx: Tx) => Promise<T>): Promise<T>;
  readonly sql: Db;
}

function bind(q: Q): Queries {
  return { ...catalogQueries(q), ...billingQueries(q), ...paymentQueries(q) };
}

/** Creates the store over a kit Db pool. */
export function createStore(sql: Db): Store {
  return {
    ...bind(sql),
    sql,
    transaction: <T>(fn: (store: Queries, tx: Tx) => Promise<T>) =>
      sql.begin((tx) => fn(bind(tx), tx)) as Promise<T>,
  };
}
