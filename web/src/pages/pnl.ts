// P&L: the day-ahead cycle by component (trading: the committed position at the
// clearing price; imbalance: what the fleet did not deliver; wear), cumulative against
// the perfect-foresight bound; the ML view (forecast against clearing price, with the
// model and its registry entry); and the analytics rows per replayed day, with
// CSV/JSON export.
import type uPlot from 'uplot';
import { getBlob, getJson, type AggregateRow, type DayAheadPeriod, type MlModel } from '../api';
import { makeChart } from '../chart';
import { el, errorBox, fmtNum, nsToS, stat, table, timeEl } from '../format';
import type { Page } from '../page';

/** Periods of the day-ahead record shown (two replayed weeks). */
const DAYAHEAD_PERIODS = 24 * 14;

/** The analytics range: everything from the epoch to a day ahead of now. */
function range(): string {
  const toNs = BigInt(Date.now() + 86_400_000) * 1_000_000n;
  return `from_ns=0&to_ns=${toNs}`;
}

async function download(path: string, filename: string, status: HTMLElement): Promise<void> {
  try {
    const blob = await getBlob(path);
    const url = URL.createObjectURL(blob);
    const link = el('a', { href: url, download: filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (error) {
    status.replaceChildren(errorBox(`export: ${(error as Error).message}`));
  }
}

function eur(cents: number): string {
  return `${fmtNum(cents / 100, 2)} EUR`;
}

/** Running sums; `null` entries (unsettled periods) stay null and add nothing. */
function cumulative(values: (number | null)[]): (number | null)[] {
  let total = 0;
  return values.map((value) => (value === null ? null : (total += value)));
}

export function pnlPage(): Page {
  const root = el('section', { 'aria-labelledby': 'pnl-title', id: 'pnl' });
  const status = el('div', { 'aria-live': 'polite' });
  const rowsBox = el('div', { id: 'pnl-rows' });
  const modelsBox = el('div', { id: 'ml-models' });
  const forecastSummary = el('p', { id: 'forecast-summary', class: 'muted' }, 'no forecasts yet');
  let revenueChart: uPlot | null = null;
  let componentChart: uPlot | null = null;
  let forecastChart: uPlot | null = null;
  let timer = 0;

  function setStat(id: string, text: string): void {
    const node = root.querySelector(`#${id}`);
    if (node) node.textContent = text;
  }

  async function refreshDayAhead(): Promise<void> {
    const periods = await getJson<DayAheadPeriod[]>(`/api/v1/dashboard/dayahead?limit=${DAYAHEAD_PERIODS}`);
    const settled = periods.filter((p) => p.imbalance_cents !== null);
    const sum = (rows: DayAheadPeriod[], pick: (p: DayAheadPeriod) => number) => rows.reduce((total, p) => total + pick(p), 0);
    const trading = sum(periods, (p) => p.trading_cents);
    const imbalance = sum(settled, (p) => p.imbalance_cents ?? 0);
    const wear = sum(settled, (p) => p.wear_cents ?? 0);
    const netSettled = sum(settled, (p) => p.trading_cents + (p.imbalance_cents ?? 0) - (p.wear_cents ?? 0));
    const boundSettled = sum(settled, (p) => p.perfect_foresight_cents);
    setStat('pnl-trading', eur(trading));
    setStat('pnl-imbalance', settled.length > 0 ? eur(imbalance) : '—');
    setStat('pnl-wear', settled.length > 0 ? eur(-wear) : '—');
    setStat('pnl-net', settled.length > 0 ? eur(netSettled) : '—');
    setStat('pnl-bound', eur(sum(periods, (p) => p.perfect_foresight_cents)));
    setStat('pnl-capture', settled.length > 0 && boundSettled > 0 ? `${fmtNum((100 * netSettled) / boundSettled, 1)} %` : '—');
    root.dataset.periods = String(periods.length);
    root.dataset.settled = String(settled.length);

    const x = periods.map((p) => nsToS(p.period_start_ns));
    const settledOr = (p: DayAheadPeriod, value: number) => (p.imbalance_cents === null ? null : value / 100);
    componentChart?.setData([
      x,
      cumulative(periods.map((p) => p.trading_cents / 100)),
      cumulative(periods.map((p) => settledOr(p, p.imbalance_cents ?? 0))),
      cumulative(periods.map((p) => settledOr(p, -(p.wear_cents ?? 0)))),
      cumulative(periods.map((p) => settledOr(p, p.trading_cents + (p.imbalance_cents ?? 0) - (p.wear_cents ?? 0)))),
      cumulative(periods.map((p) => p.perfect_foresight_cents / 100)),
    ] as uPlot.AlignedData);

    forecastChart?.setData([
      x,
      periods.map((p) => p.clearing_price_cents_per_mwh / 100),
      periods.map((p) => p.forecast_price_cents_per_mwh / 100),
    ]);
    if (periods.length > 0) {
      const mae = sum(periods, (p) => Math.abs(p.clearing_price_cents_per_mwh - p.forecast_price_cents_per_mwh)) / periods.length / 100;
      const models = [...new Set(periods.map((p) => `${p.model_name} v${p.model_version}`))].join(', ');
      const days = [...new Set(periods.map((p) => p.delivery_day))];
      forecastSummary.textContent = `Model ${models}: MAE ${fmtNum(mae, 2)} EUR/MWh over the ${periods.length} periods shown (replayed days ${days[0]} to ${days[days.length - 1]}).`;
    }
  }

  async function refreshModels(): Promise<void> {
    const answer = await getJson<{ models: MlModel[] }>('/api/v1/ml/models?limit=20');
    const metric = (model: MlModel, key: string, digits: number) => {
      const value = model.metrics[key];
      return typeof value === 'number' ? fmtNum(value, digits) : '—';
    };
    modelsBox.replaceChildren(
      table(
        'Model registry (validation metrics)',
        ['Name', 'Version', 'Kind', 'Trained', 'MAE (EUR/MWh)', 'sMAPE (%)', 'rMAE'],
        answer.models.map((m) => [m.name, String(m.version), m.kind, timeEl(m.trained_at_ns), metric(m, 'mae_eur_per_mwh', 2), metric(m, 'smape_pct', 1), metric(m, 'rmae', 3)]),
        'no models recorded',
      ),
    );
  }

  async function refreshAnalytics(): Promise<void> {
    const rows = await getJson<AggregateRow[]>(`/api/v1/analytics?${range()}`);
    const fleet = rows.filter((r) => r.device_id === null).sort((a, b) => a.period_start_ns - b.period_start_ns);
    let total = 0;
    const running = fleet.map((r) => (total += r.revenue_cents / 100));
    revenueChart?.setData([fleet.map((r) => nsToS(r.period_start_ns)), fleet.map((r) => r.revenue_cents / 100), running]);
    rowsBox.replaceChildren(
      table(
        'Replayed days (expected revenue at clearing prices)',
        ['Day start', 'Length (h)', 'Charged (kWh)', 'Discharged (kWh)', 'Schedules', 'Revenue (EUR)'],
        [...fleet].reverse().slice(0, 30).map((r) => [
          timeEl(r.period_start_ns),
          fmtNum(r.period_len_s / 3600, 2),
          fmtNum(r.charged_wh / 1000, 1),
          fmtNum(r.discharged_wh / 1000, 1),
          fmtNum(r.n_schedules),
          fmtNum(r.revenue_cents / 100, 2),
        ]),
        'no periods yet',
      ),
    );
  }

  async function refresh(): Promise<void> {
    const failures: string[] = [];
    const parts: [string, () => Promise<void>][] = [
      ['day-ahead', refreshDayAhead],
      ['models', refreshModels],
      ['analytics', refreshAnalytics],
    ];
    await Promise.all(
      parts.map(([name, part]) => part().catch((error: Error) => failures.push(`${name}: ${error.message}`))),
    );
    status.replaceChildren(...failures.map((message) => errorBox(message)));
  }

  return {
    title: 'P&L',
    mount(main) {
      const componentBox = el('div', { class: 'chart', id: 'pnl-components' });
      const forecastBox = el('div', { class: 'chart', id: 'forecast-chart' });
      const revenueBox = el('div', { class: 'chart', id: 'pnl-chart' });
      const csv = el('button', { type: 'button', id: 'export-csv' }, 'Export analytics CSV');
      const json = el('button', { type: 'button', id: 'export-json' }, 'Export analytics JSON');
      const dayaheadCsv = el('button', { type: 'button', id: 'export-dayahead-csv' }, 'Export day-ahead CSV');
      csv.addEventListener('click', () => void download(`/api/v1/analytics?${range()}&format=csv`, 'voltex-analytics.csv', status));
      json.addEventListener('click', () => void download(`/api/v1/analytics?${range()}&format=json`, 'voltex-analytics.json', status));
      dayaheadCsv.addEventListener('click', () => void download(`/api/v1/dashboard/dayahead?limit=1000&format=csv`, 'voltex-dayahead.csv', status));
      root.replaceChildren(
        el('h1', { id: 'pnl-title' }, 'P&L'),
        el(
          'div',
          { class: 'stats' },
          stat('Trading', '…', 'pnl-trading'),
          stat('Imbalance (settled days)', '…', 'pnl-imbalance'),
          stat('Wear (settled days)', '…', 'pnl-wear'),
          stat('Net (settled days)', '…', 'pnl-net'),
          stat('Perfect-foresight bound (net of wear)', '…', 'pnl-bound'),
          stat('Captured of the bound', '…', 'pnl-capture'),
        ),
        el('div', { class: 'controls' }, csv, json, dayaheadCsv),
        status,
        componentBox,
        el(
          'p',
          { class: 'muted' },
          'Trading: the committed day-ahead position at the clearing price. Imbalance: energy committed but not delivered (devices that did not accept their schedule idle), at the clearing price plus the penalty. Wear: the battery wear cost of the delivered energy. A day is settled when it is over; the bound is the same fleet planned with the clearing prices known in advance.',
        ),
        el('h2', {}, 'Forecast against clearing price (ML)'),
        forecastSummary,
        forecastBox,
        modelsBox,
        el('h2', {}, 'Replayed days'),
        revenueBox,
        rowsBox,
      );
      main.append(root);
      componentChart = makeChart(componentBox, 'Cumulative P&L by component', 'delivery period (local time)', 'cumulative (EUR)', [
        { label: 'trading (EUR)', color: '#3b82f6' },
        { label: 'imbalance (EUR)', color: '#ef4444' },
        { label: 'wear (EUR)', color: '#a16207' },
        { label: 'net (EUR)', color: '#10b981' },
        { label: 'perfect foresight (EUR)', color: '#8b5cf6' },
      ], true);
      forecastChart = makeChart(forecastBox, 'Day-ahead price: clearing against forecast', 'delivery period (local time)', 'price (EUR/MWh)', [
        { label: 'clearing (EUR/MWh)', color: '#0ea5e9' },
        { label: 'forecast (EUR/MWh)', color: '#f59e0b' },
      ], true);
      revenueChart = makeChart(revenueBox, 'Expected revenue per replayed day', 'day start (local time)', 'revenue (EUR)', [
        { label: 'per day (EUR)', color: '#3b82f6', bars: true },
        { label: 'cumulative (EUR)', color: '#f59e0b' },
      ], true);
      void refresh();
      timer = window.setInterval(() => void refresh(), 5000);
    },
    unmount() {
      window.clearInterval(timer);
      componentChart?.destroy();
      forecastChart?.destroy();
      revenueChart?.destroy();
    },
  };
}
