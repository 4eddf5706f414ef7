import { isIP } from "node:net";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { TokensSchema } from "@trellis/gen/trellis/auth/v1/auth_pb.js";

/** Where a sign-in came from, for the session record and per-address throttling. */
export interface ClientInfo {
  readonly userAgent: string;
  /** The client's IP address, or "" when unknown. */
  readonly ipAddress: string;
}

/**
 * The client of a request. The address is the x-forwarded-for entry written by the trusted proxy
 * trustedHops from the right (the gateway appends the peer it saw, so 1 by default); entries to
 * its left came from the client and are not believed. 0 trusts no header (address unknown).
 */
export function clientInfo(header: Headers, trustedHops: number): ClientInfo {
  const userAgent = (header.get("user-agent") ?? "").slice(0, 512);
  let ipAddress = "";
  const forwarded = header.get("x-forwarded-for");
  if (forwarded && trustedHops > 0) {
    const hops = forwarded.split(",").map((h) => h.trim());
    const candidate = hops[hops.length - trustedHops] ?? "";
    ipAddress = isIP(candidate) ? candidate : "";
  }
  return { userAgent, ipAddress };
}

/** A second factor as Login and AcceptInvite carry it. */
export type SecondFactor = { readonly kind: "totp" | "recovery"; readonly code: string } | undefined;

/** The second factor of a request's oneof (totp_code / recovery_code). */
export function secondFactorOf(
  oneof: { case: "totpCode"; value: string } | { case: "recoveryCode"; value: string } | { case: undefined },
): SecondFactor {
  if (oneof.case === "totpCode") return { kind: "totp", code: oneof.value };
  if (oneof.case === "recoveryCode") return { kind: "recovery", code: oneof.value };
  return undefined;
}

/** A token pair and its session, ready to answer. */
export interface IssuedTokens {
  readonly accessToken: string;
  readonly accessTokenExpiresAt: Date;
  readonly refreshToken: string;
  readonly refreshTokenExpiresAt: Date;
  readonly sessionId: string;
}

/** The Tokens message for issued tokens. */
export function tokensMessage(t: IssuedTokens): MessageInitShape<typeof TokensSchema> {
  return {
    accessToken: t.accessToken,
    accessTokenExpiresAt: timestampFromDate(t.accessTokenExpiresAt),
    refreshToken: t.refreshToken,
    refreshTokenExpiresAt: timestampFromDate(t.refreshTokenExpiresAt),
    tokenType: "Bearer",
    sessionId: t.sessionId,
  };
}

/** An email address as auth stores and compares it. */
export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** not_found for a resource of another tenant or none at all: the caller cannot tell which. */
export function notFound(what: string): ConnectError {
  return new ConnectError(`${what} not found`, Code.NotFound);
}
