// The service kit: what every Trellis service needs, written once. Modules are also importable
// one by one as @trellis/kit/<module>.js.
export * from "./access.js";
export * from "./client.js";
export * from "./config.js";
export * from "./consumer.js";
export * from "./context.js";
export * from "./db.js";
export * from "./events.js";
export * from "./logger.js";
export * from "./migrate.js";
export * from "./nats.js";
export * from "./outbox.js";
export * from "./service.js";
export * from "./tokens.js";
