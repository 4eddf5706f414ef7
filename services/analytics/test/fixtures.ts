// Deterministic generated events for the store tests.
import type { EventInput } from "../src/model.ts";

/** Monday 2024-01-01T00:00:00Z. */
export const T0 = Date.UTC(2024, 0, 1);
export const DAY = 86_400_000;

/** Property values chosen to break naive quoting. */
export const NASTY = [
  "x' OR 1=1 --",
  "x\\' OR 1=1 --",
  "back\\slash\\",
  "nul\0byte",
  "new\nline\r\ttab",
  "}",
  '{"a":1}',
  "ünïcödé 😀 ✓",
  "'",
  "\\",
  "",
  "\u007f\u0001\u001f",
  "'); DROP TABLE events; --",
];

/** A small seeded PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMES = ["page.view", "signup", "checkout:start", "purchase"];
const PLANS = ["free", "pro", "enterprise", ...NASTY];

/** Client events of one tenant over three days from T0 (ids are unique within the tenant). */
export function clientEvents(tenantId: string, seed: number, count: number): EventInput[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)] as T;
  const events: EventInput[] = [];
  for (let i = 0; i < count; i++) {
    const who = Math.floor(r() * 60);
    // "x" is both a user and an anonymous id: they are different actors.
    const actor =
      who < 40
        ? { userId: `user-${who}` }
        : who < 55
          ? { anonymousId: `anon-${who}` }
          : who < 58
            ? { userId: "x" }
            : { anonymousId: "x" };
    const props: Record<string, string> = { plan: pick(PLANS) };
    if (r() < 0.6) props.country = pick(["FR", "DE", "US", "JP"]);
    const numProps: Record<string, number> = {};
    if (r() < 0.7) numProps.amount = Math.floor(r() * 400) / 4;
    const timeMs = T0 + Math.floor(r() * 3 * DAY);
    events.push({
      tenantId,
      eventId: `ev-${seed}-${i}`,
      name: pick(NAMES),
      source: "client",
      ...actor,
      timeMs,
      receivedAtMs: timeMs + 10,
      props,
      numProps,
    });
  }
  return events;
}

/** Core's order events of one tenant, flattened as the domain consumer stores them. */
export function orderEvents(tenantId: string, seed: number, count: number): EventInput[] {
  const r = rng(seed);
  const names = [
    "trellis.core.order.created",
    "trellis.core.order.confirmed",
    "trellis.core.order.failed",
    "trellis.core.order.cancelled",
  ];
  const events: EventInput[] = [];
  for (let i = 0; i < count; i++) {
    const name = names[Math.floor(r() * names.length)] as string;
    const currency = r() < 0.7 ? "USD" : "EUR";
    const amount = 100 + Math.floor(r() * 10_000);
    const amountKey = name.endsWith("cancelled") ? "refunded.amount_minor" : "total.amount_minor";
    const money: Record<string, number> = { [amountKey]: amount };
    const currencyKey = name.endsWith("cancelled") ? "refunded.currency" : "total.currency";
    const timeMs = T0 + Math.floor(r() * 3 * DAY);
    events.push({
      tenantId,
      eventId: `order-${seed}-${i}`,
      name,
      source: "domain",
      userId: `user-${Math.floor(r() * 10)}`,
      timeMs,
      receivedAtMs: timeMs,
      props: { order_id: `ord-${i}`, [currencyKey]: currency },
      numProps: money,
      payload: JSON.stringify({ orderId: `ord-${i}` }),
    });
  }
  return events;
}
