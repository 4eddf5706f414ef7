import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";

/** Default page size when the request leaves it at 0. */
export const defaultPageSize = 50;

interface TokenBody {
  /** Version. */
  readonly v: 1;
  /** The sort key of the last row of the previous page. */
  readonly k: string;
  /** Fingerprint of the filters the token was issued for. */
  readonly f: string;
}

/** A short fingerprint of a list request's filters, binding a page token to them. */
export function filterFingerprint(filters: unknown): string {
  return createHash("sha256").update(JSON.stringify(filters)).digest("base64url").slice(0, 12);
}

/** An opaque token for the page after `lastKey`, valid only with the same filters. */
export function encodePageToken(lastKey: string, fingerprint: string): string {
  const body: TokenBody = { v: 1, k: lastKey, f: fingerprint };
  return Buffer.from(JSON.stringify(body)).toString("base64url");
}

/** The key to continue after, or undefined for the first page; invalid_argument for a bad or foreign token. */
export function decodePageToken(token: string, fingerprint: string): string | undefined {
  if (token === "") return undefined;
  let body: Partial<TokenBody>;
  try {
    body = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<TokenBody>;
  } catch {
    throw new ConnectError("invalid page token", Code.InvalidArgument);
  }
  if (body?.v !== 1 || typeof body.k !== "string" || body.k === "") {
    throw new ConnectError("invalid page token", Code.InvalidArgument);
  }
  if (body.f !== fingerprint) {
    throw new ConnectError("page token was issued for other filters", Code.InvalidArgument);
  }
  return body.k;
}

/** The page size to use: the default for 0. */
export function pageSize(requested: number): number {
  return requested > 0 ? requested : defaultPageSize;
}
