import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, test } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const script = new URL("./support/goaway-idle.ts", import.meta.url).pathname;

/** Runs the GOAWAY-then-abort scenario in its own process; answers its exit code and output. */
async function scenario(manager: "guarded" | "plain", then: "abort" | "request") {
  try {
    const { stdout } = await run(process.execPath, ["--import", "tsx", script, manager, then], {
      timeout: 20_000,
    });
    return { code: 0, output: stdout };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

describe("HTTP/2 session manager", () => {
  for (const then of ["abort", "request"] as const) {
    const what = then === "abort" ? "abort() (shutdown)" : "a new call (reconnect)";
    test(`connect-node's own manager is ended by a GOAWAY on an idle connection, then ${what}: why the guard exists`, async () => {
      const { code, output } = await scenario("plain", then);
      assert.notEqual(code, 0, output);
      assert.match(output, /received GOAWAY without any open streams/);
    });

    test(`the kit's manager survives a GOAWAY on an idle connection, then ${what}`, async () => {
      const { code, output } = await scenario("guarded", then);
      assert.equal(code, 0, output);
      assert.match(output, /survived/);
    });
  }
});
