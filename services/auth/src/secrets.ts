import { createCipheriv, createDecipheriv, createHash, randomBytes, randomInt } from "node:crypto";

/** A new 256-bit random token, base64url (refresh tokens, invite tokens). */
export function randomToken(): string {
  return randomBytes(32).toString("base64url");
}

/** SHA-256 of a high-entropy secret, as stored (tokens and recovery codes are never kept in clear). */
export function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

// Crockford-style alphabet without look-alikes (no 0/O, 1/I/L, U).
const codeAlphabet = "ABCDEFGHJKMNPQRSTVWXYZ23456789";

/** Ten new recovery codes like "K7M2Q-9XW4T" (about 49 bits each). */
export function newRecoveryCodes(count = 10): string[] {
  const codes: string[] = [];
  for (let i = 0; i < count; i++) {
    let raw = "";
    for (let j = 0; j < 10; j++) raw += codeAlphabet[randomInt(codeAlphabet.length)];
    codes.push(`${raw.slice(0, 5)}-${raw.slice(5)}`);
  }
  return codes;
}

/** The hash a recovery code is stored and looked up by: case and hyphens do not matter. */
export function recoveryCodeHash(code: string): Buffer {
  return sha256(`recovery:${code.replace(/-/g, "").toUpperCase()}`);
}

/** Encrypts secrets at rest (signing keys, TOTP secrets) when a key is configured. */
export interface Sealer {
  /** Seals plaintext bound to context (e.g. a kid or user id): "v1.<iv>.<tag>.<ct>", or "plain.<text>". */
  seal(plaintext: string, context: string): string;
  /** Opens what seal wrote for the same context; throws when it was tampered with or the key differs. */
  open(sealed: string, context: string): string;
}

/** A sealer using AES-256-GCM with key, or one that stores plaintext when key is undefined. */
export function createSealer(key: Buffer | undefined): Sealer {
  return {
    seal(plaintext, context) {
      if (!key) return `plain.${plaintext}`;
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", key, iv).setAAD(Buffer.from(context));
      const ct = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
      return ["v1", iv, cipher.getAuthTag(), ct]
        .map((p) => (typeof p === "string" ? p : p.toString("base64url")))
        .join(".");
    },
    open(sealed, context) {
      if (sealed.startsWith("plain.")) return sealed.slice(6);
      const [version, iv, tag, ct] = sealed.split(".");
      if (version !== "v1" || !iv || !tag || ct === undefined) throw new Error("unknown sealed format");
      if (!key) throw new Error("secret is encrypted but AUTH_ENCRYPTION_KEY is not set");
      const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(iv, "base64url"))
        .setAAD(Buffer.from(context))
        .setAuthTag(Buffer.from(tag, "base64url"));
      return Buffer.concat([decipher.update(Buffer.from(ct, "base64url")), decipher.final()]).toString(
        "utf8",
      );
    },
  };
}
