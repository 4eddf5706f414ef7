// Starts core from the environment (see config.ts and the kit's config for the variables).
import { runService } from "@trellis/kit/service.js";
import { coreService } from "./server.js";

await runService(coreService, process.env);
