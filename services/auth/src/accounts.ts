import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import { TenantCreatedSchema, UserCreatedSchema } from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { uuidv7 } from "@trellis/kit/events.js";
import { clientInfo, normalizeEmail, secondFactorOf, tokensMessage } from "./request.ts";
import { type AuthDeps, badCredentials, checkPassword, checkSecondFactor, openSession } from "./sign-in.ts";

/** SignUp and Login. */
export function createAccountHandlers(
  deps: AuthDeps,
): Pick<ServiceImpl<typeof AuthService>, "signUp" | "login"> {
  const { store, config } = deps;
  return {
    async signUp(req, ctx) {
      const email = normalizeEmail(req.email);
      const client = clientInfo(ctx.requestHeader, config.TRUSTED_PROXY_HOPS);
      // An existing email is answered before the costly hash; SignUp reveals it anyway.
      if (await store.userByEmail(email))
        throw new ConnectError("email already registered", Code.AlreadyExists);
      const passwordHash = await deps.passwords.hash(req.password);
      const userId = uuidv7();
      const tenantId = uuidv7();
      const tokens = await store.transaction(async (tx) => {
        if (!(await tx.insertUser(userId, email, passwordHash))) {
          throw new ConnectError("email already registered", Code.AlreadyExists);
        }
        await tx.insertTenant(tenantId, req.tenantName);
        await tx.addMembership(tenantId, userId, ["owner"]);
        const occurredAt = timestampFromDate(new Date());
        await tx.emit(TenantCreatedSchema, {
          tenantId,
          name: req.tenantName,
          ownerUserId: userId,
          occurredAt,
        });
        await tx.emit(UserCreatedSchema, { userId, tenantId, email, occurredAt });
        return openSession(deps, tx, { userId, tenantId, client, mfaUsed: false });
      });
      return { userId, tenantId, tokens: tokensMessage(tokens) };
    },

    async login(req, ctx) {
      const email = normalizeEmail(req.email);
      const client = clientInfo(ctx.requestHeader, config.TRUSTED_PROXY_HOPS);
      const { user, hadFailures } = await checkPassword(deps, email, req.password, client);
      const tenantId = await store.memberTenant(user.id, req.tenantId);
      if (!tenantId) {
        await deps.throttle.fail(email, client.ipAddress);
        throw badCredentials();
      }
      const mfa = await checkSecondFactor(deps, user, secondFactorOf(req.secondFactor), client);
      if (!mfa.passed) return { result: { case: "mfaRequired", value: { reason: mfa.reason } } };
      if (hadFailures) await deps.throttle.succeed(email);
      const tokens = await store.transaction((tx) =>
        openSession(deps, tx, { userId: user.id, tenantId, client, mfaUsed: mfa.mfaUsed }),
      );
      return { result: { case: "tokens", value: tokensMessage(tokens) } };
    },
  };
}
