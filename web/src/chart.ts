// uPlot wrappers: every chart has labelled axes with units, sizes to its container,
// and follows the theme through CSS variables.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface SeriesSpec {
  label: string;
  color: string;
  bars?: boolean;
  /** Join points across missing samples (sparse telemetry). */
  spanGaps?: boolean;
}

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

/** A time-series (x: time) or category (x: index) chart. */
export function makeChart(
  container: HTMLElement,
  title: string,
  xLabel: string,
  yLabel: string,
  series: SeriesSpec[],
  timeAxis: boolean,
): uPlot {
  const axisColor = cssVar('--fg');
  const gridColor = cssVar('--grid');
  const width = Math.max(280, container.clientWidth || 600);
  const options: uPlot.Options = {
    title,
    width,
    height: 240,
    scales: { x: { time: timeAxis } },
    axes: [
      { label: xLabel, stroke: axisColor, grid: { stroke: gridColor } },
      { label: yLabel, stroke: axisColor, grid: { stroke: gridColor }, size: 70 },
    ],
    series: [
      { label: timeAxis ? 'time' : xLabel },
      ...series.map((spec) => ({
        label: spec.label,
        stroke: spec.color,
        width: 2,
        fill: spec.bars ? spec.color + '99' : undefined,
        paths: spec.bars ? uPlot.paths.bars!({ size: [0.8, 80] }) : undefined,
        spanGaps: spec.spanGaps ?? false,
      })),
    ],
  };
  const data: uPlot.AlignedData = [[], ...series.map(() => [])];
  const chart = new uPlot(options, data, container);
  const observer = new ResizeObserver(() => {
    const next = Math.max(280, container.clientWidth);
    if (Math.abs(next - chart.width) > 4) chart.setSize({ width: next, height: 240 });
  });
  observer.observe(container);
  return chart;
}
