import { runService } from "@trellis/kit/service.js";
import { loadBillingConfig } from "./config.ts";
import { createBillingService } from "./server.ts";

// Config is parsed once up front so a bad variable fails the start with every problem named.
let streamName: string;
try {
  streamName = loadBillingConfig(process.env).BILLING_STREAM;
} catch (error) {
  process.stderr.write(`billing: bad configuration: ${error instanceof Error ? error.message : error}\n`);
  process.exit(1);
}
await runService(createBillingService({ streamName }), process.env);
