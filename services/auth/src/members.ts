import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { AuthService } from "@trellis/gen/trellis/auth/v1/auth_pb.js";
import {
  InviteCreatedSchema,
  MemberJoinedSchema,
  UserCreatedSchema,
} from "@trellis/gen/trellis/auth/v1/events_pb.js";
import { requirePrincipal } from "@trellis/kit/access.js";
import { uuidv7 } from "@trellis/kit/events.js";
import { clientInfo, normalizeEmail, notFound, secondFactorOf, tokensMessage } from "./request.ts";
import { checkCanGrant, memberMessage } from "./roles.ts";
import { randomToken, sha256 } from "./secrets.ts";
import { type AuthDeps, badCredentials, checkSecondFactor, openSession } from "./sign-in.ts";
import { type InviteRow, isUniqueViolation, type Tx } from "./store.ts";

const defaultPageSize = 50;
const minNewPasswordLength = 12;

function pageCursor(token: string): bigint {
  if (token === "") return 0n;
  const text = Buffer.from(token, "base64url").toString("utf8");
  if (!/^m[0-9]{1,18}$/.test(text)) throw new ConnectError("invalid page token", Code.InvalidArgument);
  return BigInt(text.slice(1));
}

function alreadyMember(): ConnectError {
  return new ConnectError("already a member of the tenant", Code.AlreadyExists);
}

/** ListMembers, InviteMember and AcceptInvite. */
export function createMemberHandlers(
  deps: AuthDeps,
): Pick<ServiceImpl<typeof AuthService>, "listMembers" | "inviteMember" | "acceptInvite"> {
  const { store, grants, config } = deps;

  // Joins the invite's tenant inside tx, once: a second accept of the same invite finds it used.
  const join = async (tx: Tx, invite: InviteRow, tokenHash: Buffer, userId: string) => {
    if (!(await tx.openInvite(tokenHash, true))) throw notFound("invite");
    try {
      await tx.addMembership(invite.tenantId, userId, invite.roles);
    } catch (error) {
      if (isUniqueViolation(error)) throw alreadyMember();
      throw error;
    }
    await tx.acceptInvite(invite.id, userId);
    await tx.emit(MemberJoinedSchema, {
      tenantId: invite.tenantId,
      userId,
      inviteId: invite.id,
      roles: invite.roles,
      occurredAt: timestampFromDate(new Date()),
    });
  };

  return {
    async listMembers(req, ctx) {
      const p = requirePrincipal(ctx);
      const size = req.page?.pageSize || defaultPageSize;
      const rows = await store.listMembers(p.tenantId, pageCursor(req.page?.pageToken ?? ""), size + 1);
      const page = rows.slice(0, size);
      const last = page.at(-1);
      const nextPageToken =
        rows.length > size && last ? Buffer.from(`m${last.seq}`).toString("base64url") : "";
      return { members: page.map(memberMessage), page: { nextPageToken } };
    },

    async inviteMember(req, ctx) {
      const p = requirePrincipal(ctx);
      const actor = await grants.require(store, p.tenantId, p.userId, "auth.members.invite");
      const email = normalizeEmail(req.email);
      const roles = await grants.roles(store, p.tenantId);
      for (const name of req.roles) {
        const role = roles.get(name);
        if (!role) throw notFound(`role ${name}`);
        checkCanGrant(actor, role);
      }
      if (await store.isMemberByEmail(p.tenantId, email)) throw alreadyMember();
      const token = randomToken();
      const invite = {
        id: uuidv7(),
        tenantId: p.tenantId,
        email,
        roles: [...req.roles],
        expiresAt: new Date(Date.now() + config.INVITE_TTL),
      };
      await store.transaction(async (tx) => {
        await tx.insertInvite(invite, sha256(token), p.userId);
        await tx.emit(InviteCreatedSchema, {
          inviteId: invite.id,
          tenantId: invite.tenantId,
          email,
          roles: invite.roles,
          invitedByUserId: p.userId,
          expiresAt: timestampFromDate(invite.expiresAt),
          occurredAt: timestampFromDate(new Date()),
        });
      });
      return {
        invite: { id: invite.id, email, roles: invite.roles, expiresAt: timestampFromDate(invite.expiresAt) },
        inviteToken: token,
      };
    },

    async acceptInvite(req, ctx) {
      const tokenHash = sha256(req.inviteToken);
      const invite = await store.openInvite(tokenHash);
      if (!invite) throw notFound("invite");
      const client = clientInfo(ctx.requestHeader, config.TRUSTED_PROXY_HOPS);
      const existing = await store.userByEmail(invite.email);

      if (existing) {
        await deps.throttle.check(existing.email, client.ipAddress);
        if (!(await deps.passwords.verify(existing.passwordHash, req.password))) {
          await deps.throttle.fail(existing.email, client.ipAddress);
          throw badCredentials();
        }
        if (await store.rolesOf(invite.tenantId, existing.id)) throw alreadyMember();
        const mfa = await checkSecondFactor(deps, existing, secondFactorOf(req.secondFactor), client);
        if (!mfa.passed) return { result: { case: "mfaRequired", value: { reason: mfa.reason } } };
        await deps.throttle.succeed(existing.email);
        const tokens = await store.transaction(async (tx) => {
          await join(tx, invite, tokenHash, existing.id);
          return openSession(deps, tx, {
            userId: existing.id,
            tenantId: invite.tenantId,
            client,
            mfaUsed: mfa.mfaUsed,
          });
        });
        return {
          result: { case: "tokens", value: tokensMessage(tokens) },
          userId: existing.id,
          tenantId: invite.tenantId,
        };
      }

      // Counted in code points, as the contract's min_len counts characters.
      if ([...req.password].length < minNewPasswordLength) {
        throw new ConnectError(
          `a new account's password needs ${minNewPasswordLength} characters`,
          Code.InvalidArgument,
        );
      }
      const passwordHash = await deps.passwords.hash(req.password);
      const userId = uuidv7();
      const tokens = await store.transaction(async (tx) => {
        // The email got an account since the invite was read: let the caller retry as that account.
        if (!(await tx.insertUser(userId, invite.email, passwordHash))) {
          throw new ConnectError("account created concurrently; try again", Code.Aborted);
        }
        await tx.emit(UserCreatedSchema, {
          userId,
          tenantId: invite.tenantId,
          email: invite.email,
          occurredAt: timestampFromDate(new Date()),
        });
        await join(tx, invite, tokenHash, userId);
        return openSession(deps, tx, { userId, tenantId: invite.tenantId, client, mfaUsed: false });
      });
      return { result: { case: "tokens", value: tokensMessage(tokens) }, userId, tenantId: invite.tenantId };
    },
  };
}
