import { readFileSync } from "node:fs";
import { ConfigError, tlsFiles } from "@trellis/kit/config.js";
import { createLogger } from "@trellis/kit/logger.js";
import { installSignalHandlers } from "@trellis/kit/server.js";
import { createTracing } from "@trellis/kit/tracing.js";
import { collectDefaultMetrics, Registry } from "prom-client";
import { loadGatewayConfig } from "./config.js";
import { startGateway } from "./gateway.js";

// `node --import tsx gateway/src/main.ts`: reads the environment once, starts, stops on SIGTERM/SIGINT.
try {
  const config = loadGatewayConfig(process.env);
  const logger = createLogger({ service: "gateway", level: config.LOG_LEVEL });
  // Tracing only when spans go somewhere: it keeps a context per async step, which costs.
  const tracing = config.OTEL_EXPORTER_OTLP_ENDPOINT
    ? createTracing({ service: "gateway", otlpEndpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT })
    : undefined;
  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics });
  const files = tlsFiles(config);
  const gateway = await startGateway({
    config,
    logger,
    metrics,
    ...(tracing ? { tracer: tracing.tracer } : {}),
    ...(files
      ? {
          tls: {
            cert: readFileSync(files.cert, "utf8"),
            key: readFileSync(files.key, "utf8"),
            ca: readFileSync(files.ca, "utf8"),
          },
        }
      : {}),
  });
  installSignalHandlers(
    {
      close: async () => {
        await gateway.close();
        await tracing?.shutdown();
      },
    },
    logger,
  );
} catch (error) {
  if (error instanceof ConfigError) process.stderr.write(`gateway: bad configuration: ${error.message}\n`);
  else process.stderr.write(`gateway: failed to start: ${error instanceof Error ? error.stack : error}\n`);
  process.exit(1);
}
