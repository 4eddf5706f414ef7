import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { ident, join, quoteNumber, quoteString, Sql, sql } from "../src/sql.ts";

const invalidArgument = (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument;

describe("quoteString", () => {
  const cases: [string, string][] = [
    ["plain", "'plain'"],
    ["x' OR 1=1 --", "'x\\' OR 1=1 --'"],
    ["back\\slash", "'back\\\\slash'"],
    ["\\'", "'\\\\\\''"],
    ["nul\0", "'nul\\x00'"],
    ["\n\r\t\u001f\u007f", "'\\x0a\\x0d\\x09\\x1f\\x7f'"],
    ["ünï 😀 }{", "'ünï 😀 }{'"],
    ["", "''"],
  ];
  for (const [input, expected] of cases) {
    test(JSON.stringify(input), () => assert.equal(quoteString(input), expected));
  }

  test("the only unescaped quotes are the delimiters, every backslash starts an escape", () => {
    for (let code = 0; code < 0x3000; code++) {
      const text = `a${String.fromCharCode(code)}'\\b`;
      const quoted = quoteString(text).slice(1, -1);
      // Walk the literal as ClickHouse's lexer does: a backslash consumes the next character.
      for (let i = 0; i < quoted.length; i++) {
        if (quoted[i] === "\\") i++;
        else assert.notEqual(quoted[i], "'", `code ${code}`);
        assert.ok((quoted.codePointAt(i) ?? 0x20) >= 0x20 || quoted[i - 1] === "\\", `control ${code}`);
      }
    }
  });

  test("rejects lone surrogates and non-strings", () => {
    assert.throws(() => quoteString("\ud800"), invalidArgument);
    assert.throws(() => quoteString("a\udc00b"), invalidArgument);
    assert.throws(() => quoteString(1 as unknown as string), invalidArgument);
  });
});

describe("quoteNumber", () => {
  test("finite numbers; negatives parenthesized so `- -x` never becomes a comment", () => {
    assert.equal(quoteNumber(42), "42");
    assert.equal(quoteNumber(-3), "(-3)");
    assert.equal(quoteNumber(0.1), "0.1");
    assert.equal(quoteNumber(-0), "0");
    assert.equal(quoteNumber(1e-7), "1e-7");
  });
  test("rejects NaN, infinities, unsafe integers and non-numbers", () => {
    for (const bad of [
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      2 ** 60,
      "1" as unknown as number,
    ]) {
      assert.throws(() => quoteNumber(bad), invalidArgument);
    }
  });
});

describe("ident and the sql tag", () => {
  test("identifiers are whitelisted", () => {
    assert.equal(ident("trellis_analytics").text, "trellis_analytics");
    for (const bad of ["", "1abc", "a-b", "a.b", "a`b", "a b", "x'--", "a".repeat(65)]) {
      assert.throws(() => ident(bad), invalidArgument, bad);
    }
  });
  test("every interpolated value is quoted; fragments are spliced", () => {
    const where = sql`name = ${"x' --"} AND n > ${-1}`;
    assert.equal(
      sql`SELECT * FROM ${ident("t")} WHERE ${where} AND k IN ${["a", "b'"]}`.text,
      "SELECT * FROM t WHERE name = 'x\\' --' AND n > (-1) AND k IN ('a', 'b\\'')",
    );
    assert.equal(join([sql`a`, sql`b`], " AND ").text, "a AND b");
    assert.throws(() => sql`x IN ${[]}`, invalidArgument);
    assert.throws(() => sql`${{} as never}`, invalidArgument);
  });
  test("Sql cannot be made from outside the module", () => {
    assert.throws(() => new Sql("DROP TABLE x", Symbol("trusted")), TypeError);
  });
});
