import { createHash } from "node:crypto";
import { type DescMessage, fromBinary, type MessageShape, toBinary, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { PageRequest } from "@trellis/gen/trellis/common/v1/page_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import type { Logger } from "pino";
import { catchUp } from "./clock.ts";
import type { EngineDeps } from "./payments-engine.ts";
import type { Queries, Store, Tx } from "./store.ts";

/** What every handler factory takes. */
export interface HandlerDeps extends EngineDeps {
  readonly store: Store;
  readonly logger: Logger;
}

/** The caller's tenant, from the verified access token. */
export function tenantOf(ctx: HandlerContext): string {
  return requirePrincipal(ctx).tenantId;
}

/** not_found for a resource of this tenant that does not exist (or belongs to another tenant). */
export function notFound(what: string): ConnectError {
  return new ConnectError(`${what} not found`, Code.NotFound);
}

/** failed_precondition with a reason. */
export function precondition(reason: string): ConnectError {
  return new ConnectError(reason, Code.FailedPrecondition);
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value as object)
        .sort()
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/** A fingerprint of method and request, idempotency key aside; map order does not matter. */
export function requestHash<D extends DescMessage>(
  method: string,
  schema: D,
  message: MessageShape<D>,
): Uint8Array {
  const json = toJson(schema, message) as Record<string, unknown>;
  delete json.idempotencyKey;
  return createHash("sha256")
    .update(`${method}\n${JSON.stringify(sortKeys(json))}`)
    .digest();
}

/** One idempotent mutation: its request, response schema and tenant-scoped key. */
export interface IdempotentCall<Req extends DescMessage, Res extends DescMessage> {
  readonly tenantId: string;
  readonly key: string;
  readonly method: string;
  readonly requestSchema: Req;
  readonly request: MessageShape<Req>;
  readonly responseSchema: Res;
}

/** What an idempotent mutation gets besides the transaction. */
export interface MutationContext<Res extends DescMessage> {
  /** The tenant's billing time, read with the key claim. */
  readonly now: Date;
  /**
   * Stores the response with the key now, so the caller can pipeline it with its last writes
   * (postgres.js sends queries issued together on a transaction back to back); optional.
   */
  complete(response: MessageShape<Res>): Promise<void>;
}

/**
 * Runs fn in a transaction that first claims the tenant's idempotency key: a repeat of the same
 * request answers the stored first response without running fn; the same key with another request
 * is failed_precondition. The response is stored in the same transaction as the effect.
 */
export async function idempotent<Req extends DescMessage, Res extends DescMessage>(
  deps: HandlerDeps,
  call: IdempotentCall<Req, Res>,
  fn: (s: Queries, tx: Tx, ctx: MutationContext<Res>) => Promise<MessageShape<Res>>,
): Promise<MessageShape<Res>> {
  const hash = requestHash(call.method, call.requestSchema, call.request);
  return deps.store.transaction(async (s, tx) => {
    const { claim, clockAt } = await s.claimKey(
      call.tenantId,
      call.key,
      call.method,
      hash,
      deps.settings.idempotencyTtlMs,
    );
    if (claim.kind === "replay") return fromBinary(call.responseSchema, claim.response);
    if (claim.kind === "mismatch") {
      throw precondition("idempotency key was used with a different request");
    }
    if (claim.kind === "in_progress")
      throw new ConnectError("request with this key is in progress", Code.Aborted);
    let completed = false;
    const wall = Date.now();
    const now = new Date(clockAt && clockAt.getTime() > wall ? clockAt.getTime() : wall);
    const complete = (response: MessageShape<Res>) => {
      completed = true;
      return s.completeKey(call.tenantId, call.key, toBinary(call.responseSchema, response));
    };
    const response = await fn(s, tx, { now, complete });
    if (!completed) await complete(response);
    return response;
  });
}

/**
 * A change to the tenant's billing state: the work its billing clock has due runs first, then fn
 * runs as an idempotent mutation (see idempotent) holding the tenant's customer lock, which
 * dunning and period closing take too. fn also gets what the lock returned.
 */
export async function customerMutation<Req extends DescMessage, Res extends DescMessage>(
  deps: HandlerDeps,
  call: IdempotentCall<Req, Res>,
  fn: (
    s: Queries,
    tx: Tx,
    ctx: MutationContext<Res>,
    customer: Awaited<ReturnType<Queries["lockCustomer"]>>,
  ) => Promise<MessageShape<Res>>,
): Promise<MessageShape<Res>> {
  await catchUp(deps.store, deps, call.tenantId);
  return idempotent(deps, call, async (s, tx, ctx) => fn(s, tx, ctx, await s.lockCustomer(call.tenantId)));
}

const DEFAULT_PAGE = 50;

/** Page size and the seq to continue after, from a PageRequest (invalid_argument on a bad token). */
export function pageOf(page: PageRequest | undefined): { size: number; after: bigint } {
  const size = page?.pageSize && page.pageSize > 0 ? page.pageSize : DEFAULT_PAGE;
  const token = page?.pageToken ?? "";
  if (token === "") return { size, after: 0n };
  const text = Buffer.from(token, "base64url").toString("utf8");
  if (!/^s[1-9][0-9]{0,18}$/.test(text)) throw new ConnectError("invalid page token", Code.InvalidArgument);
  return { size, after: BigInt(text.slice(1)) };
}

/** The next page token after rows (fetched with size + 1): empty when there is no next page. */
export function nextPage<T extends { seq: bigint }>(
  rows: readonly T[],
  size: number,
): { rows: T[]; token: string } {
  if (rows.length <= size) return { rows: [...rows], token: "" };
  const page = rows.slice(0, size);
  const last = page[page.length - 1] as T;
  return { rows: page, token: Buffer.from(`s${last.seq}`, "utf8").toString("base64url") };
}
