import type { Db } from "@trellis/kit/db.js";
import { createEmitter, type Emit, type EventOptions } from "./events.ts";
import { accountQueries, type Q } from "./store-accounts.ts";
import { sessionQueries } from "./store-sessions.ts";

export type { CustomRoleRow, InviteRow, MemberRow, UserRow } from "./store-accounts.ts";
export { isUniqueViolation } from "./store-accounts.ts";
export type { NewSession, RefreshRow, SessionRow, SigningKeyRow } from "./store-sessions.ts";

function queries(q: Q) {
  return { ...accountQueries(q), ...sessionQueries(q) };
}

/** Every query of auth, on the pool or inside a transaction. */
export type Queries = ReturnType<typeof queries>;

/** The queries of one transaction plus its outbox. */
export type Tx = Queries & { readonly emit: Emit };

/** Auth's store: queries on the pool, and transactions whose events commit with them. */
export interface Store extends Queries {
  /** Runs fn in one transaction; what it emits is published if and only if it commits. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
}

/** Creates the store over a pool. */
export function createStore(sql: Db, events: EventOptions): Store {
  return {
    ...queries(sql),
    async transaction(fn) {
      return (await sql.begin((tx) => fn({ ...queries(tx), emit: createEmitter(tx, events) }))) as Awaited<
        ReturnType<typeof fn>
      >;
    },
  };
}
