import { randomBytes, randomUUID } from "node:crypto";
import { maxAccessTokenLifetimeSec } from "@trellis/kit/tokens.js";
import {
  type CryptoKey,
  errors,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTVerifyGetKey,
  SignJWT,
} from "jose";
import type { Sealer } from "./secrets.ts";
import type { SigningKeyRow, Store } from "./store.ts";

/** Signing algorithms auth can use. */
export type SigningAlg = "ES256" | "EdDSA";

/** What an access token says about its bearer. */
export interface AccessClaims {
  readonly userId: string;
  readonly tenantId: string;
  readonly sessionId: string;
  readonly roles: readonly string[];
  readonly permissions: readonly string[];
}

/** A signed access token. */
export interface SignedToken {
  readonly token: string;
  readonly kid: string;
  readonly expiresAt: Date;
}

/** What rotate did. */
export interface RotationResult {
  /** kid of the key created, if one was. */
  readonly created?: string;
  /** kids of the keys deleted because every token they signed has expired. */
  readonly deleted: readonly string[];
}

/** Auth's signing keys: the current one signs, every one whose tokens may be unexpired is published. */
export interface SigningKeys {
  /** Ensures a signing key exists (creating the first one). */
  init(): Promise<void>;
  /** Signs an access token for claims with the current key. */
  sign(claims: AccessClaims): Promise<SignedToken>;
  /** The published public keys as JWKs, the current signing key first. */
  jwks(): Promise<JWK[]>;
  /** A jose key resolver over the published keys, reloading from the database on an unknown kid. */
  readonly getKey: JWTVerifyGetKey;
  /**
   * Creates a new key when the newest one is older than the configured age (or force); it is
   * published at once and signs from publishLeadMs later, when it supersedes the old one. Deletes
   * keys superseded longer ago than a token lifetime plus the margin.
   */
  rotate(options?: { force?: boolean }): Promise<RotationResult>;
}

/** Options of createSigningKeys. */
export interface SigningKeysOptions {
  readonly store: Store;
  readonly sealer: Sealer;
  readonly alg: SigningAlg;
  readonly issuer: string;
  readonly audience: string;
  readonly accessTtlMs: number;
  readonly maxAgeMs: number;
  /** Extra time a superseded key stays published after its last token expired. */
  readonly retireMarginMs: number;
  /** How long a new key is published before it signs (longer than any JWKS cache of it). */
  readonly publishLeadMs: number;
  /** The time keys age, activate and retire by (tests move it); tokens' iat/exp use real time. */
  readonly clock?: () => number;
  /** How long loaded keys are used before the table is read again (default 60 s). */
  readonly cacheTtlMs?: number;
}

interface LoadedKey {
  readonly row: SigningKeyRow;
  readonly publicKey: CryptoKey;
  privateKey?: Promise<CryptoKey>;
}

const unknownKidReloadMs = 1000;

/** Creates the key manager; call init() before signing. */
export function createSigningKeys(options: SigningKeysOptions): SigningKeys {
  const { store, sealer, alg } = options;
  const cacheTtlMs = options.cacheTtlMs ?? 60_000;
  const clock = options.clock ?? Date.now;
  const retainMs = maxAccessTokenLifetimeSec * 1000 + options.retireMarginMs;
  let keys: LoadedKey[] = [];
  let loadedAt = 0;
  let loading: Promise<void> | undefined;

  const published = (key: LoadedKey, now = clock()) =>
    key.row.supersededAt === null || key.row.supersededAt.getTime() + retainMs > now;
  // The signing key: the latest to have activated (rows come latest activation first).
  const signing = (now = clock()) => keys.find((k) => k.row.activatesAt.getTime() <= now);

  const load = async () => {
    const rows = await store.signingKeys();
    const byKid = new Map(keys.map((k) => [k.row.kid, k]));
    const next: LoadedKey[] = [];
    for (const row of rows) {
      const known = byKid.get(row.kid);
      if (known) next.push({ ...known, row });
      else next.push({ row, publicKey: (await importJWK(row.publicJwk as JWK, row.alg)) as CryptoKey });
    }
    keys = next;
    loadedAt = Date.now();
  };
  // Concurrent callers share one load; `fresh` callers (who know the table just changed) wait for
  // a load that starts after any in flight, which may have read the table too early.
  const reload = (fresh = false): Promise<void> => {
    if (loading && !fresh) return loading;
    const next = (loading ?? Promise.resolve()).catch(() => {}).then(load);
    loading = next;
    next
      .finally(() => {
        if (loading === next) loading = undefined;
      })
      .catch(() => {});
    return next;
  };

  const current = async (): Promise<LoadedKey> => {
    if (Date.now() - loadedAt > cacheTtlMs) await reload();
    const key = signing();
    if (!key) throw new Error("no signing key: init() was not called or the signing_keys table is empty");
    return key;
  };

  const privateKeyOf = (key: LoadedKey) => {
    key.privateKey ??= importJWK(
      JSON.parse(sealer.open(key.row.privateKey, key.row.kid)) as JWK,
      key.row.alg,
    ) as Promise<CryptoKey>;
    return key.privateKey;
  };

  const rotate: SigningKeys["rotate"] = async ({ force = false } = {}) => {
    const now = clock();
    const result = await store.transaction(async (tx) => {
      await tx.lockSigningKeys();
      const rows = await tx.signingKeys();
      const newest = rows.reduce<SigningKeyRow | undefined>(
        (a, r) => (a && a.createdAt >= r.createdAt ? a : r),
        undefined,
      );
      let created: string | undefined;
      if (!newest || force || newest.alg !== alg || now - newest.createdAt.getTime() >= options.maxAgeMs) {
        const pair = await generateKeyPair(alg, { extractable: true });
        created = `${new Date(now).toISOString().slice(0, 10)}-${randomBytes(6).toString("hex")}`;
        const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: created, alg, use: "sig" };
        const privateKey = sealer.seal(JSON.stringify(await exportJWK(pair.privateKey)), created);
        // The very first key signs at once: there is nothing else to sign with.
        const activatesAt = new Date(rows.length === 0 ? now : now + options.publishLeadMs);
        await tx.insertSigningKey({
          kid: created,
          alg,
          publicJwk,
          privateKey,
          createdAt: new Date(now),
          activatesAt,
          supersededAt: null,
        });
        await tx.supersedeSigningKeys(created, activatesAt);
      }
      const deleted = await tx.deleteSigningKeys(new Date(now - retainMs));
      return { created, deleted };
    });
    await reload(true);
    return result;
  };

  let lastUnknownReload = 0;
  const getKey: JWTVerifyGetKey = async (header) => {
    const find = () => keys.find((k) => k.row.kid === header.kid && published(k));
    let key = find();
    if (!key && Date.now() - lastUnknownReload > unknownKidReloadMs) {
      // An unknown kid may be a key another instance just created; look once, at most every second.
      lastUnknownReload = Date.now();
      await reload(true);
      key = find();
    }
    if (!key || key.row.alg !== header.alg) throw new errors.JWKSNoMatchingKey();
    return key.publicKey;
  };

  return {
    async init() {
      await reload();
      if (!signing() || !keys.some((k) => k.row.supersededAt === null && k.row.alg === alg)) await rotate();
    },
    async sign(claims) {
      const key = await current();
      const iat = Math.floor(Date.now() / 1000);
      const exp = iat + Math.floor(options.accessTtlMs / 1000);
      const token = await new SignJWT({
        tid: claims.tenantId,
        sid: claims.sessionId,
        roles: [...claims.roles],
        perms: [...claims.permissions],
      })
        .setProtectedHeader({ alg: key.row.alg, kid: key.row.kid, typ: "at+jwt" })
        .setSubject(claims.userId)
        .setIssuer(options.issuer)
        .setAudience(options.audience)
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .setJti(randomUUID())
        .sign(await privateKeyOf(key));
      return { token, kid: key.row.kid, expiresAt: new Date(exp * 1000) };
    },
    async jwks() {
      if (Date.now() - loadedAt > cacheTtlMs) await reload();
      const now = clock();
      const current = signing(now);
      const rest = keys.filter((k) => k !== current && published(k, now));
      return [...(current ? [current] : []), ...rest].map((k) => ({ ...(k.row.publicJwk as JWK) }));
    },
    getKey,
    rotate,
  };
}
