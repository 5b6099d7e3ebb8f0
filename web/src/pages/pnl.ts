// P&L: expected revenue per replayed period and cumulatively, energy charged and
// discharged, from the analytics API, with CSV/JSON export of the same rows.
import type uPlot from 'uplot';
import { getBlob, getJson, type AggregateRow } from '../api';
import { makeChart } from '../chart';
import { el, errorBox, fmtNum, nsToS, table, timeEl } from '../format';
import type { Page } from '../page';

/** The analytics range: everything from the epoch to a day ahead of now. */
function range(): string {
  const toNs = BigInt(Date.now() + 86_400_000) * 1_000_000n;
  return `from_ns=0&to_ns=${toNs}`;
}

async function download(format: 'csv' | 'json', status: HTMLElement): Promise<void> {
  try {
    const blob = await getBlob(`/api/v1/analytics?${range()}&format=${format}`);
    const url = URL.createObjectURL(blob);
    const link = el('a', { href: url, download: `voltex-analytics.${format}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (error) {
    status.replaceChildren(errorBox(`export: ${(error as Error).message}`));
  }
}

export function pnlPage(): Page {
  const root = el('section', { 'aria-labelledby': 'pnl-title' });
  const status = el('div', { 'aria-live': 'polite' });
  const rowsBox = el('div', { id: 'pnl-rows' });
  let chart: uPlot | null = null;
  let timer = 0;

  async function refresh(): Promise<void> {
    try {
      const rows = await getJson<AggregateRow[]>(`/api/v1/analytics?${range()}`);
      const fleet = rows.filter((r) => r.device_id === null).sort((a, b) => a.period_start_ns - b.period_start_ns);
      let total = 0;
      const cumulative = fleet.map((r) => (total += r.revenue_cents / 100));
      chart?.setData([fleet.map((r) => nsToS(r.period_start_ns)), fleet.map((r) => r.revenue_cents / 100), cumulative]);
      (root.querySelector('#pnl-total') as HTMLElement).textContent = `${fmtNum(total, 2)} EUR`;
      rowsBox.replaceChildren(
        table(
          'Fleet periods (expected revenue at realised prices)',
          ['Period start', 'Length (h)', 'Charged (kWh)', 'Discharged (kWh)', 'Schedules', 'Revenue (EUR)'],
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
      status.textContent = '';
    } catch (error) {
      status.replaceChildren(errorBox(`analytics: ${(error as Error).message}`));
    }
  }

  return {
    title: 'P&L',
    mount(main) {
      const chartBox = el('div', { class: 'chart', id: 'pnl-chart' });
      const csv = el('button', { type: 'button', id: 'export-csv' }, 'Export CSV');
      const json = el('button', { type: 'button', id: 'export-json' }, 'Export JSON');
      csv.addEventListener('click', () => void download('csv', status));
      json.addEventListener('click', () => void download('json', status));
      root.replaceChildren(
        el('h1', { id: 'pnl-title' }, 'P&L'),
        el('div', { class: 'stats' }, el('div', { class: 'stat' }, el('span', { class: 'label' }, 'Cumulative expected revenue'), el('span', { class: 'value', id: 'pnl-total' }, '…'))),
        el('div', { class: 'controls' }, csv, json),
        status,
        chartBox,
        el(
          'p',
          { class: 'muted' },
          'Perfect-foresight bound, imbalance and wear components: the analytics API records expected revenue per period only, so they are not shown yet.',
        ),
        rowsBox,
      );
      main.append(root);
      chart = makeChart(chartBox, 'Expected revenue', 'period start (local time)', 'revenue (EUR)', [
        { label: 'per period (EUR)', color: '#3b82f6', bars: true },
        { label: 'cumulative (EUR)', color: '#f59e0b' },
      ], true);
      void refresh();
      timer = window.setInterval(() => void refresh(), 5000);
    },
    unmount() {
      window.clearInterval(timer);
      chart?.destroy();
    },
  };
}
