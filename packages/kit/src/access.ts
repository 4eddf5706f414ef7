import type { DescMethod } from "@bufbuild/protobuf";
import { getOption, hasOption } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type Interceptor,
  type StreamRequest,
  type UnaryRequest,
} from "@connectrpc/connect";
import { Audience, access } from "@trellis/gen/trellis/common/v1/options_pb.js";
import { callerServiceKey, type Principal, principalKey } from "./context.ts";
import type { TokenVerifier } from "./tokens.ts";

type AnyFn = Parameters<Interceptor>[0];

/** Who may call a method, as its `(trellis.common.v1.access)` option declares (UNSPECIFIED reads as user). */
export interface MethodAccessRule {
  readonly audience: "public" | "user" | "internal";
  /** Permission the user's token must carry; empty means any signed-in member. */
  readonly permission: string;
  /** Service accounts allowed to call an internal method. */
  readonly callers: readonly string[];
}

/** The method's declared access rule, or undefined when it declares none (health, reflection). */
export function methodAccess(method: DescMethod): MethodAccessRule | undefined {
  if (!hasOption(method, access)) return undefined;
  const opt = getOption(method, access);
  const audience =
    opt.audience === Audience.PUBLIC ? "public" : opt.audience === Audience.INTERNAL ? "internal" : "user";
  return { audience, permission: opt.permission, callers: [...opt.callers] };
}

/** Options of the access interceptor. */
export interface AccessInterceptorOptions {
  /** Verifies bearer access tokens. */
  readonly verifier: TokenVerifier;
}

/**
 * A server interceptor enforcing each method's declared access rule before the handler runs:
 * - public: no token needed; a valid bearer token still sets the principal, an invalid one is ignored.
 * - user (and unspecified): a valid bearer token is required (unauthenticated otherwise) and must carry
 *   the declared permission (permission_denied otherwise); service callers must forward a user token too.
 * - internal: the caller's service identity (callerServiceKey) must be one of the declared callers:
 *   another service → permission_denied; no service identity but a bearer token (a user reaching an
 *   internal method) → permission_denied; no identity at all → unauthenticated. A forwarded user
 *   token, if valid, sets the principal.
 * - no declared rule (grpc.health, reflection): passes through untouched.
 */
export function createAccessInterceptor(options: AccessInterceptorOptions): Interceptor {
  const { verifier } = options;
  const rules = new Map<DescMethod, MethodAccessRule | null>();

  const optionalPrincipal = async (header: Headers, values: ContextValues) => {
    const token = bearerToken(header);
    if (token === undefined) return;
    try {
      values.set(principalKey, await verifier.verify(token));
    } catch {
      // Where no token is required, a bad one is the same as none.
    }
  };

  const ruleOf = (method: DescMethod) => {
    let rule = rules.get(method);
    if (rule === undefined) {
      rule = methodAccess(method) ?? null;
      rules.set(method, rule);
    }
    return rule;
  };

  const enforce = async (next: AnyFn, req: UnaryRequest | StreamRequest, rule: MethodAccessRule) => {
    const values = req.contextValues;

    if (rule.audience === "public") {
      await optionalPrincipal(req.header, values);
      return next(req);
    }

    if (rule.audience === "internal") {
      const caller = values.get(callerServiceKey);
      if (caller === undefined) {
        if (bearerToken(req.header) !== undefined) {
          throw new ConnectError("internal method", Code.PermissionDenied);
        }
        throw new ConnectError("service identity required", Code.Unauthenticated);
      }
      if (!rule.callers.includes(caller)) {
        throw new ConnectError("caller not allowed", Code.PermissionDenied);
      }
      await optionalPrincipal(req.header, values);
      return next(req);
    }

    const token = bearerToken(req.header);
    if (token === undefined) throw new ConnectError("access token required", Code.Unauthenticated);
    const principal = await verifier.verify(token);
    if (rule.permission !== "" && !principal.permissions.has(rule.permission)) {
      throw new ConnectError("permission denied", Code.PermissionDenied);
    }
    values.set(principalKey, principal);
    return next(req);
  };

  return (next) => (req) => {
    const rule = ruleOf(req.method);
    // Nothing to check or verify: no extra promise for the call (health, public calls without a token).
    if (rule === null || (rule.audience === "public" && bearerToken(req.header) === undefined))
      return next(req);
    return enforce(next, req, rule);
  };
}

/** The request's principal; throws unauthenticated when the call carries no verified user. */
export function requirePrincipal(ctx: { readonly values: ContextValues }): Principal {
  const principal = ctx.values.get(principalKey);
  if (!principal) throw new ConnectError("access token required", Code.Unauthenticated);
  return principal;
}

/** The token of an `authorization: Bearer <token>` header, if there is one. */
export function bearerToken(header: Headers): string | undefined {
  const value = header.get("authorization");
  if (value === null) return undefined;
  const match = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(value);
  return match?.[1];
}
