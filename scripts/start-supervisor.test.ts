import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { formatLine } from "./start-supervisor.ts";

describe("the launcher's combined log", () => {
  const time = Date.UTC(2026, 0, 2, 3, 4, 5);

  test("a pino line with a label level (the kit's) shows that level", () => {
    const line = JSON.stringify({ level: "warn", time, service: "auth", msg: "slow", ms: 12 });
    assert.equal(formatLine("auth", line), "03:04:05 auth      WARN  slow ms=12");
  });

  test("a pino line with a numeric level shows its label", () => {
    const line = JSON.stringify({ level: 50, time, msg: "boom", err: { message: "x" } });
    assert.equal(formatLine("core", line), '03:04:05 core      ERROR boom err={"message":"x"}');
  });

  test("a line that is not JSON is shown as it is", () => {
    assert.match(formatLine("gateway", "plain text"), /^\d\d:\d\d:\d\d gateway {3}plain text$/);
  });
});
