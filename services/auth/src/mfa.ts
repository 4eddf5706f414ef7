import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { MfaDisabledSchema, MfaEnabledSchema } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import { clientInfo } from "./request.ts";
import { newRecoveryCodes, recoveryCodeHash } from "./secrets.ts";
import { type AuthDeps, spendSecondFactor } from "./sign-in.ts";
import type { UserRow } from "./store.ts";
import { matchTotp, newTotpSecret, otpauthUri } from "./totp.ts";

function wrongCode(): ConnectError {
  return new ConnectError("wrong or used code", Code.PermissionDenied);
}

/** EnrollTotp, ConfirmTotp and DisableTotp: MFA of the caller, valid in every tenant. */
export function createMfaHandlers(
  deps: AuthDeps,
): Pick<ServiceImpl<typeof AuthService>, "enrollTotp" | "confirmTotp" | "disableTotp"> {
  const { store, sealer, throttle } = deps;

  // The caller's account, under the sign-in throttle: codes are guessable, so failures count.
  const caller = async (ctx: HandlerContext): Promise<{ user: UserRow; ip: string; tenantId: string }> => {
    const p = requirePrincipal(ctx);
    const user = await store.userById(p.userId);
    if (!user) throw new ConnectError("account not found", Code.Unauthenticated);
    const ip = clientInfo(ctx.requestHeader, deps.config.TRUSTED_PROXY_HOPS).ipAddress;
    return { user, ip, tenantId: p.tenantId };
  };

  return {
    async enrollTotp(_req, ctx) {
      const { user } = await caller(ctx);
      if (user.totpSecret) throw new ConnectError("MFA is already on", Code.FailedPrecondition);
      const secret = newTotpSecret();
      await store.setPendingTotp(user.id, sealer.seal(secret, user.id));
      return { secret, otpauthUri: otpauthUri(deps.config.TOTP_ISSUER, user.email, secret) };
    },

    async confirmTotp(req, ctx) {
      const { user, ip, tenantId } = await caller(ctx);
      if (user.totpSecret) throw new ConnectError("MFA is already on", Code.FailedPrecondition);
      if (!user.totpPendingSecret)
        throw new ConnectError("no TOTP enrollment pending", Code.FailedPrecondition);
      await throttle.check(user.email, ip);
      const step = matchTotp(sealer.open(user.totpPendingSecret, user.id), req.code, deps.clock());
      if (step === undefined) {
        await throttle.fail(user.email, ip);
        throw wrongCode();
      }
      const codes = newRecoveryCodes();
      await store.transaction(async (tx) => {
        const locked = await tx.userById(user.id, true);
        // A concurrent enrollment or confirmation changed the secret since it was checked.
        if (locked?.totpSecret || locked?.totpPendingSecret !== user.totpPendingSecret) {
          throw new ConnectError("TOTP enrollment changed; enroll again", Code.FailedPrecondition);
        }
        await tx.enableTotp(user.id, step);
        await tx.replaceRecoveryCodes(user.id, codes.map(recoveryCodeHash));
        await tx.emit(MfaEnabledSchema, {
          userId: user.id,
          tenantId,
          occurredAt: timestampFromDate(new Date()),
        });
      });
      return { recoveryCodes: codes };
    },

    async disableTotp(req, ctx) {
      const { user, ip, tenantId } = await caller(ctx);
      if (!user.totpSecret) throw new ConnectError("MFA is off", Code.FailedPrecondition);
      await throttle.check(user.email, ip);
      const factor =
        req.proof.case === "code"
          ? ({ kind: "totp", code: req.proof.value } as const)
          : req.proof.case === "recoveryCode"
            ? ({ kind: "recovery", code: req.proof.value } as const)
            : undefined;
      if (!factor) throw new ConnectError("a code or a recovery code is required", Code.InvalidArgument);
      if (!(await spendSecondFactor(deps, store, user, factor))) {
        await throttle.fail(user.email, ip);
        throw wrongCode();
      }
      await store.transaction(async (tx) => {
        await tx.disableTotp(user.id);
        await tx.emit(MfaDisabledSchema, {
          userId: user.id,
          tenantId,
          occurredAt: timestampFromDate(new Date()),
        });
      });
      return {};
    },
  };
}
