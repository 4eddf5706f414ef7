import { uuidv7 } from "@trellis/kit/events.js";

/** A sortable id with a type prefix: "ch_0190…" (a UUIDv7 without dashes). */
export function newId(prefix: "plan" | "sub" | "pm" | "ch" | "re" | "in" | "il" | "ur"): string {
  return `${prefix}_${uuidv7().replaceAll("-", "")}`;
}

/** Whether text has the shape of an id this service made with the prefix (tokens never do). */
export function isOwnId(text: string, prefix: string): boolean {
  return text.startsWith(`${prefix}_`) && /^[0-9a-f]{32}$/.test(text.slice(prefix.length + 1));
}
