// Dispatch: roll-outs per schedule version (issued / received / accepted /
// completed / failed), success rate per version, and the slowest devices.
import type uPlot from 'uplot';
import { getJson, type RolloutSummary } from '../api';
import { makeChart } from '../chart';
import { el, errorBox, fmtNum, fmtPct, nsToS, table, timeEl } from '../format';
import type { Page } from '../page';

const STATUSES = ['issued', 'received', 'accepted', 'started', 'completed', 'rejected', 'superseded', 'failed'];

export function dispatchPage(): Page {
  const root = el('section', { 'aria-labelledby': 'dispatch-title' });
  const versionsBox = el('div', { id: 'rollouts' });
  const slowBox = el('div', { id: 'slowest' });
  const status = el('div', { 'aria-live': 'polite' });
  let chart: uPlot | null = null;
  let timer = 0;

  async function refresh(): Promise<void> {
    try {
      const summary = await getJson<RolloutSummary>('/api/v1/dashboard/rollouts?limit=20');
      versionsBox.replaceChildren(
        table(
          'Roll-outs per schedule version (devices per status)',
          ['Version', 'Issued', 'Devices', ...STATUSES, 'Success'],
          summary.versions.map((v) => [
            String(v.version),
            timeEl(v.issued_at_ns),
            fmtNum(v.n_devices),
            ...STATUSES.map((s) => fmtNum(v.by_status[s] ?? 0)),
            fmtPct(v.success_rate),
          ]),
          'no schedules issued yet',
        ),
      );
      slowBox.replaceChildren(
        table(
          'Slowest devices of the newest version',
          ['Device', 'Version', 'Status', 'Latency (ms)', 'Attempts'],
          summary.slowest.map((d) => [d.device_id, String(d.version), d.status, fmtNum(d.latency_ms), String(d.attempts)]),
        ),
      );
      const ordered = [...summary.versions].reverse();
      chart?.setData([ordered.map((v) => nsToS(v.issued_at_ns)), ordered.map((v) => v.success_rate * 100)]);
      status.textContent = '';
    } catch (error) {
      status.replaceChildren(errorBox(`roll-outs: ${(error as Error).message}`));
    }
  }

  return {
    title: 'Dispatch',
    mount(main) {
      const chartBox = el('div', { class: 'chart', id: 'success-chart' });
      root.replaceChildren(el('h1', { id: 'dispatch-title' }, 'Dispatch'), status, chartBox, versionsBox, slowBox);
      main.append(root);
      chart = makeChart(chartBox, 'Command success rate per roll-out', 'roll-out issued (local time)', 'success (%)', [{ label: 'success (%)', color: '#10b981' }], true);
      void refresh();
      timer = window.setInterval(() => void refresh(), 2000);
    },
    unmount() {
      window.clearInterval(timer);
      chart?.destroy();
    },
  };
}
