import { startNatsServer, type TestNatsServer } from "@trellis/kit/testing.js";
import type { CoreInternals } from "../../src/server.js";
import { createHarness, type Harness } from "./harness.js";
import { type ScriptedBilling, startScriptedBilling } from "./scripted-billing.js";

/** A private NATS server, a test database, a scripted billing and one core instance on them. */
export interface CoreFixture {
  readonly nats: TestNatsServer;
  readonly harness: Harness;
  readonly billing: ScriptedBilling;
  readonly baseUrl: string;
  readonly internals: CoreInternals;
  close(): Promise<void>;
}

/** Starts the fixture; env is added to core's environment. */
export async function startCoreFixture(env: Record<string, string> = {}): Promise<CoreFixture> {
  const nats = await startNatsServer("/usr/sbin/nats-server");
  const harness = await createHarness();
  const billing = await startScriptedBilling();
  const { instance, internals } = await harness.start({ natsUrl: nats.url, billingUrl: billing.url, env });
  return {
    nats,
    harness,
    billing,
    baseUrl: instance.baseUrl,
    internals,
    async close() {
      await harness.close();
      await billing.close();
      await nats.dispose();
    },
  };
}
