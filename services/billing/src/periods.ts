import type { Interval } from "./money.ts";

const monthsPer: Readonly<Record<Interval, number>> = { month: 1, year: 12 };

/**
 * anchor plus count intervals in UTC calendar months; a day the target month lacks is clamped to
 * its last day (31 Jan + 1 month = 28 or 29 Feb), and the time of day is kept.
 */
export function addIntervals(anchor: Date, interval: Interval, count: number): Date {
  const months = anchor.getUTCMonth() + monthsPer[interval] * count;
  const year = anchor.getUTCFullYear() + Math.floor(months / 12);
  const month = ((months % 12) + 12) % 12;
  const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  return new Date(
    Date.UTC(
      year,
      month,
      Math.min(anchor.getUTCDate(), lastDay),
      anchor.getUTCHours(),
      anchor.getUTCMinutes(),
      anchor.getUTCSeconds(),
      anchor.getUTCMilliseconds(),
    ),
  );
}

/** The first renewal boundary anchor + k intervals (k ≥ 1) strictly after `after`. */
export function nextBoundary(anchor: Date, interval: Interval, after: Date): Date {
  const monthsApart =
    (after.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + after.getUTCMonth() - anchor.getUTCMonth();
  // Start a little before the estimate: clamping can put a boundary a few days early.
  let k = Math.max(1, Math.floor(monthsApart / monthsPer[interval]) - 1);
  for (;;) {
    const candidate = addIntervals(anchor, interval, k);
    if (candidate.getTime() > after.getTime()) return candidate;
    k++;
  }
}

/** "1 Mar 2030" in UTC, for invoice lines. */
export function formatDay(date: Date): string {
  return date.toLocaleDateString("en-GB", {
    day: "numeric",
    month: "short",
    year: "numeric",
    timeZone: "UTC",
  });
}

/** Milliseconds in a day. */
export const DAY_MS = 86_400_000;
