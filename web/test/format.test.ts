import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { OrderStatus } from "@trellis/gen/trellis/core/v1/core_pb.js";
import { failureReasonText, formatMoney, orderSettled, parseMoney } from "../src/format.ts";
import { claimsOf, createSessionStore } from "../src/session.ts";

describe("money, statuses and the session", () => {
  test("amounts parse to exact minor units per currency and format back", () => {
    const cases: [string, string, bigint | undefined][] = [
      ["12.5", "USD", 1250n],
      ["0.07", "EUR", 7n],
      ["1000", "JPY", 1000n],
      ["1.5", "JPY", undefined],
      ["12.345", "USD", undefined],
      ["abc", "USD", undefined],
      ["90071992547409.93", "USD", 9007199254740993n],
    ];
    for (const [text, currency, want] of cases)
      assert.equal(parseMoney(text, currency), want, `${text} ${currency}`);
    assert.equal(formatMoney({ amountMinor: 1250n, currency: "USD" }, "en-US"), "$12.50");
    assert.equal(formatMoney({ amountMinor: -5n, currency: "EUR" }, "en-US"), "-€0.05");
    assert.equal(
      formatMoney({ amountMinor: 9007199254740993n, currency: "USD" }, "en-US"),
      "$90,071,992,547,409.93",
    );
    assert.equal(formatMoney(undefined), "—");
  });

  test("order statuses: settled ones end the watch; failure reasons read as sentences", () => {
    assert.equal(orderSettled(OrderStatus.PENDING), false);
    assert.equal(orderSettled(OrderStatus.PAID), false);
    assert.equal(orderSettled(OrderStatus.CONFIRMED), true);
    assert.equal(orderSettled(OrderStatus.FAILED), true);
    assert.equal(failureReasonText("card_declined"), "The card was declined.");
    assert.equal(failureReasonText("some_new_reason"), "some new reason");
  });

  test("the session survives a reload through storage and is forgotten on clear", () => {
    const data = new Map<string, string>();
    const storage = {
      getItem: (k: string) => data.get(k) ?? null,
      setItem: (k: string, v: string) => void data.set(k, v),
      removeItem: (k: string) => void data.delete(k),
    };
    const first = createSessionStore(storage);
    const seen: unknown[] = [];
    first.subscribe((s) => seen.push(s?.accessToken));
    first.set({ accessToken: "a", refreshToken: "r", accessExpiresAt: 1, sessionId: "s", email: "e" });
    assert.equal(createSessionStore(storage).get()?.refreshToken, "r");
    first.clear();
    assert.equal(createSessionStore(storage).get(), undefined);
    assert.deepEqual(seen, ["a", undefined]);
    data.set("trellis.session", "{not json");
    assert.equal(createSessionStore(storage).get(), undefined);
  });

  test("claims are read from the token payload, permissions from either claim name", () => {
    const payload = {
      sub: "u1",
      tid: "t1",
      sid: "s1",
      exp: 2_000_000_000,
      permissions: ["a.b"],
      perms: ["c.d"],
    };
    const token = `x.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.y`;
    const claims = claimsOf(token);
    assert.equal(claims?.userId, "u1");
    assert.equal(claims?.expiresAt, 2_000_000_000_000);
    assert.deepEqual([...(claims?.permissions ?? [])].sort(), ["a.b", "c.d"]);
    assert.equal(claimsOf("garbage"), undefined);
  });
});
