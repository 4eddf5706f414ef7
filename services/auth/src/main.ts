import { ConfigError } from "@trellis/kit/config.js";
import { runService } from "@trellis/kit/service.js";
import { createAuthService } from "./server.ts";

// The only place process.env is read; config.ts (auth's) and the kit's parse it.
let service: ReturnType<typeof createAuthService>;
try {
  service = createAuthService(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`auth: bad configuration: ${error.message}\n`);
  process.exit(1);
}
await runService(service.definition, process.env);
