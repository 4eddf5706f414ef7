// All of core's SQL, by topic. Every function takes the pool or the transaction to run in, so a
// saga step can compose several of them in one transaction.
export * from "./store-catalog.js";
export * from "./store-inventory.js";
export * from "./store-orders.js";
export * from "./store-saga.js";
