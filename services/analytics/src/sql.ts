import { Code, ConnectError } from "@connectrpc/connect";

// The only place where a value becomes SQL text. ClickHouse 18.16 has no query parameters, so
// every value the store puts into a statement passes through quoteString or quoteNumber, and
// every name through ident, which accepts only names the code itself chose (never user text).

const trusted = Symbol("trusted");

/** A fragment of SQL text; only the `sql` tag, `ident` and `join` of this module can make one. */
export class Sql {
  /** @internal */
  constructor(
    readonly text: string,
    key: symbol,
  ) {
    if (key !== trusted) throw new TypeError("Sql is made only by the sql tag, ident and join");
  }
}

/** A value the `sql` tag accepts: quoted as a literal (strings, numbers, lists) or spliced (Sql). */
export type SqlValue = string | number | Sql | readonly string[] | readonly number[];

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** True when text is well-formed UTF-16 (no lone surrogates), so it survives UTF-8 unchanged. */
export function isWellFormed(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

// Backslash, quote and every control character (C0 and DEL); nothing else is ever escaped.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const NEEDS_ESCAPE = /[\\'\x00-\x1f\x7f]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const ESCAPED = /[\\'\x00-\x1f\x7f]/g;

function escapeChar(ch: string): string {
  if (ch === "\\") return "\\\\";
  if (ch === "'") return "\\'";
  return `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`;
}

/**
 * Renders a string as a single-quoted ClickHouse literal that evaluates to exactly `value`:
 * backslash and quote are escaped, every control character becomes `\xHH`, and strings that
 * are not well-formed UTF-16 (lone surrogates, which UTF-8 cannot carry) are rejected.
 */
export function quoteString(value: string): string {
  if (typeof value !== "string") throw invalid("expected a string");
  if (LONE_SURROGATE.test(value)) throw invalid("text is not well-formed unicode");
  // Most values need no escape at all; the rest are escaped character by character.
  return NEEDS_ESCAPE.test(value) ? `'${value.replace(ESCAPED, escapeChar)}'` : `'${value}'`;
}

/** Renders a finite number as a ClickHouse numeric literal; NaN and infinities are rejected. */
export function quoteNumber(value: number): string {
  if (typeof value !== "number" || !Number.isFinite(value)) throw invalid("expected a finite number");
  if (Number.isInteger(value) && !Number.isSafeInteger(value)) throw invalid("integer out of range");
  // String() gives the shortest text that reads back as the same double (e.g. 1e-7, -0.5).
  const text = Object.is(value, -0) ? "0" : String(value);
  return value < 0 ? `(${text})` : text;
}

/** A name for a database, table or column; only `[A-Za-z_][A-Za-z0-9_]*` names are accepted. */
export function ident(name: string): Sql {
  if (typeof name !== "string" || !IDENT.test(name)) throw invalid("invalid identifier");
  return new Sql(name, trusted);
}

function render(value: SqlValue): string {
  if (value instanceof Sql) return value.text;
  if (typeof value === "string") return quoteString(value);
  if (typeof value === "number") return quoteNumber(value);
  if (Array.isArray(value)) {
    if (value.length === 0) throw invalid("empty list");
    return `(${value.map((v: string | number) => (typeof v === "string" ? quoteString(v) : quoteNumber(v))).join(", ")})`;
  }
  throw invalid("unsupported SQL value");
}

/** Template tag: the literal parts are trusted code, every interpolated value is quoted or a Sql fragment. */
export function sql(strings: TemplateStringsArray, ...values: SqlValue[]): Sql {
  let text = strings[0] ?? "";
  values.forEach((value, i) => {
    text += render(value) + (strings[i + 1] ?? "");
  });
  return new Sql(text, trusted);
}

/** Joins fragments with a separator written in code (", ", " AND " …). */
export function join(parts: readonly Sql[], separator: ", " | " AND " | " OR " | " "): Sql {
  return new Sql(parts.map((p) => p.text).join(separator), trusted);
}
