import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { freePort } from "@trellis/kit/testing.js";

const repoRoot = fileURLToPath(new URL("../../../..", import.meta.url));

/** A service running as its own process. */
export interface ServiceProcess {
  readonly baseUrl: string;
  /** Resolves with the signal (or exit code) the process ended with. */
  readonly exited: Promise<NodeJS.Signals | number | null>;
  /** Everything it printed, for failure messages. */
  readonly output: () => string;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Runs a service's main.ts (path relative to the repository root) with `node --import tsx` on a
 * free port of 127.0.0.1, as production runs it, so SIGKILL is a real crash.
 */
export async function spawnService(main: string, env: Record<string, string>): Promise<ServiceProcess> {
  const port = await freePort();
  let output = "";
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", main], {
    cwd: repoRoot,
    env: {
      ...process.env,
      HOST: "127.0.0.1",
      PORT: String(port),
      ADMIN_PORT: "0",
      LOG_LEVEL: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) =>
    child.once("exit", (code, signal) => resolve(signal ?? code)),
  );
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    exited,
    output: () => output,
    kill: (signal = "SIGKILL") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}
