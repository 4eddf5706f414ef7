import uPlot from "uplot";

const accent = "#2f6fde";
// Counts are whole numbers: no 2.5 ticks.
const wholeSteps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 100_000, 1_000_000];

function widthOf(el: HTMLElement): number {
  return Math.max(320, Math.floor(el.clientWidth || 640));
}

// Charts are created once their container is in the document (its width is known), and follow it.
function fitted(
  container: HTMLElement,
  make: (width: number) => uPlot,
): { chart: () => uPlot; destroy(): void } {
  let chart: uPlot | undefined;
  const observer = new ResizeObserver(() =>
    chart?.setSize({ width: widthOf(container), height: chart.height }),
  );
  observer.observe(container);
  return {
    chart() {
      chart ??= make(widthOf(container));
      return chart;
    },
    destroy() {
      observer.disconnect();
      chart?.destroy();
      chart = undefined;
    },
  };
}

/** A line chart of the last `keep` values, appended as they arrive (x in seconds since the epoch). */
export interface LiveChart {
  push(timeSec: number, value: number): void;
  /** The values currently shown, oldest first. */
  values(): readonly number[];
  destroy(): void;
}

/** Creates the live chart in container. */
export function createLiveChart(container: HTMLElement, label: string, keep = 60): LiveChart {
  const xs: number[] = [];
  const ys: number[] = [];
  const holder = fitted(
    container,
    (width) =>
      new uPlot(
        {
          width,
          height: 220,
          // Room on the right for the newest time label.
          padding: [12, 36, 0, 0],
          legend: { show: false },
          cursor: { drag: { x: false, y: false } },
          scales: { y: { range: (_u, _min, max) => [0, Math.max(5, Math.ceil(max * 1.2))] } },
          series: [
            {},
            { label, stroke: accent, width: 2, fill: "rgba(47, 111, 222, 0.12)", points: { show: false } },
          ],
          axes: [
            {
              space: 70,
              incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300],
              values: (_u, splits) => splits.map((t) => new Date(t * 1000).toLocaleTimeString()),
            },
            { size: 40, incrs: wholeSteps },
          ],
        },
        [xs, ys],
        container,
      ),
  );
  return {
    push(timeSec, value) {
      xs.push(timeSec);
      ys.push(value);
      if (xs.length > keep) {
        xs.shift();
        ys.shift();
      }
      holder.chart().setData([xs, ys]);
    },
    values: () => ys,
    destroy: holder.destroy,
  };
}

/** Draws (or redraws) a funnel as bars: one bar per step, its users as the height. */
export function drawFunnel(
  container: HTMLElement,
  steps: readonly { name: string; users: number }[],
): () => void {
  container.replaceChildren();
  const xs = steps.map((_, i) => i);
  const ys = steps.map((s) => s.users);
  const holder = fitted(
    container,
    (width) =>
      new uPlot(
        {
          width,
          height: 240,
          legend: { show: false },
          cursor: { show: false },
          scales: {
            x: { time: false, range: [-0.5, steps.length - 0.5] },
            y: { range: (_u, _min, max) => [0, Math.max(1, Math.ceil(max * 1.15))] },
          },
          series: [
            {},
            {
              label: "users",
              fill: accent,
              stroke: accent,
              paths: uPlot.paths.bars?.({ size: [0.6, 120] }),
              points: { show: false },
            },
          ],
          axes: [
            { splits: () => xs, values: (_u, splits) => splits.map((i) => steps[i]?.name ?? "") },
            { size: 40, incrs: wholeSteps },
          ],
        },
        [xs, ys],
        container,
      ),
  );
  holder.chart();
  return holder.destroy;
}
