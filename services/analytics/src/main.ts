import { runService } from "@trellis/kit/service.js";
import { createAnalyticsService } from "./server.ts";

await runService(createAnalyticsService(), process.env);
