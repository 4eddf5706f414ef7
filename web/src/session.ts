// Where the console keeps its tokens. Trade-off, chosen on purpose: the tokens live in memory and
// in sessionStorage, so a page reload keeps the user signed in, a new tab or a closed browser does
// not, and nothing is sent automatically with requests (no cookie, so no CSRF). The cost: any
// script running on this origin can read sessionStorage, so an XSS bug would leak the refresh
// token. The console loads no third-party scripts and renders server text only as text (never
// innerHTML), and the refresh token rotates on every use with reuse detection in auth, which
// bounds what a stolen one is worth. An httpOnly cookie would need a backend-for-frontend the
// gateway does not have.

/** The tokens of the signed-in session, as the console keeps them. */
export interface StoredSession {
  readonly accessToken: string;
  readonly refreshToken: string;
  /** When the access token expires, ms since the epoch. */
  readonly accessExpiresAt: number;
  readonly sessionId: string;
  /** The email the user signed in with, for display only. */
  readonly email: string;
}

/** The subset of the Web Storage API the store uses (sessionStorage in the browser). */
export type KeyValueStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

/** Holds the current session in memory, mirrored to storage; listeners hear every change. */
export interface SessionStore {
  get(): StoredSession | undefined;
  set(session: StoredSession): void;
  clear(): void;
  /** Calls listener on every set/clear; returns the unsubscribe function. */
  subscribe(listener: (session: StoredSession | undefined) => void): () => void;
}

/** Creates the store, loading a session left in storage by an earlier page load of this tab. */
export function createSessionStore(storage?: KeyValueStorage, key = "trellis.session"): SessionStore {
  let current = load(storage, key);
  const listeners = new Set<(session: StoredSession | undefined) => void>();
  const emit = () => {
    for (const listener of listeners) listener(current);
  };
  return {
    get: () => current,
    set(session) {
      current = session;
      try {
        storage?.setItem(key, JSON.stringify(session));
      } catch {
        // Storage full or disabled (private mode): the session still works until reload.
      }
      emit();
    },
    clear() {
      current = undefined;
      storage?.removeItem(key);
      emit();
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

function load(storage: KeyValueStorage | undefined, key: string): StoredSession | undefined {
  const raw = storage?.getItem(key);
  if (!raw) return undefined;
  try {
    const value = JSON.parse(raw) as Partial<StoredSession>;
    if (typeof value.accessToken !== "string" || typeof value.refreshToken !== "string") return undefined;
    return {
      accessToken: value.accessToken,
      refreshToken: value.refreshToken,
      accessExpiresAt: Number(value.accessExpiresAt) || 0,
      sessionId: String(value.sessionId ?? ""),
      email: String(value.email ?? ""),
    };
  } catch {
    return undefined;
  }
}

/** What the console reads from an access token (unverified: for display and hiding buttons only). */
export interface Claims {
  readonly userId: string;
  readonly tenantId: string;
  readonly sessionId: string;
  readonly permissions: ReadonlySet<string>;
  /** Expiry, ms since the epoch (0 when absent). */
  readonly expiresAt: number;
}

/** Decodes an access token's payload; never trusts it for anything the server must check. */
export function claimsOf(token: string): Claims | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
    const list = (v: unknown) =>
      Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
    return {
      userId: String(payload.sub ?? ""),
      tenantId: String(payload.tid ?? ""),
      sessionId: String(payload.sid ?? ""),
      permissions: new Set([...list(payload.permissions), ...list(payload.perms)]),
      expiresAt: typeof payload.exp === "number" ? payload.exp * 1000 : 0,
    };
  } catch {
    return undefined;
  }
}
