// Dispatch: roll-outs per schedule version (issued / received / accepted /
// completed / failed), success rate per version, and the slowest devices. Live: each
// fleet event on the WebSocket stream (a version issued, an ack, a deadline) triggers
// a refresh within REFRESH_AFTER_EVENT_MS (bursts share one); a slow poll covers a
// closed stream.
import type uPlot from 'uplot';
import { fleetStreamUrl, getJson, type RolloutSummary } from '../api';
import { makeChart } from '../chart';
import { el, errorBox, fmtNum, fmtPct, nsToS, table, timeEl } from '../format';
import type { Page } from '../page';

/** A burst of fleet events is answered with one refresh this long after its first. */
const REFRESH_AFTER_EVENT_MS = 200;
/** Fallback poll (the stream drives the page while it is open). */
const POLL_MS = 10_000;

const STATUSES = ['issued', 'received', 'accepted', 'started', 'completed', 'rejected', 'superseded', 'failed'];

export function dispatchPage(): Page {
  const root = el('section', { 'aria-labelledby': 'dispatch-title' });
  const versionsBox = el('div', { id: 'rollouts' });
  const slowBox = el('div', { id: 'slowest' });
  const status = el('div', { 'aria-live': 'polite' });
  let chart: uPlot | null = null;
  let timer = 0;
  let pending = 0;
  let socket: WebSocket | null = null;
  let nEvents = 0;
  const live = el('p', { class: 'muted', id: 'dispatch-live', role: 'status' }, 'connecting…');

  function refreshSoon(): void {
    if (pending === 0) {
      pending = window.setTimeout(() => {
        pending = 0;
        void refresh();
      }, REFRESH_AFTER_EVENT_MS);
    }
  }

  function connect(): void {
    const ws = new WebSocket(fleetStreamUrl());
    socket = ws;
    ws.onopen = () => {
      live.textContent = 'live: fleet events';
    };
    ws.onclose = () => {
      if (socket === ws) live.textContent = `stream closed; polling every ${POLL_MS / 1000} s`;
    };
    ws.onmessage = (event) => {
      try {
        const message = JSON.parse(String(event.data)) as { type?: string };
        if (message.type === 'fleet' || message.type === 'lagged') {
          nEvents += 1;
          root.dataset.fleetEvents = String(nEvents);
          refreshSoon();
        }
      } catch {
        // A frame that is not JSON is ignored.
      }
    };
  }

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
      root.dataset.refreshes = String(Number(root.dataset.refreshes ?? '0') + 1);
    } catch (error) {
      status.replaceChildren(errorBox(`roll-outs: ${(error as Error).message}`));
    }
  }

  return {
    title: 'Dispatch',
    mount(main) {
      const chartBox = el('div', { class: 'chart', id: 'success-chart' });
      root.replaceChildren(el('h1', { id: 'dispatch-title' }, 'Dispatch'), live, status, chartBox, versionsBox, slowBox);
      main.append(root);
      chart = makeChart(chartBox, 'Command success rate per roll-out', 'roll-out issued (local time)', 'success (%)', [{ label: 'success (%)', color: '#10b981' }], true);
      connect();
      void refresh();
      timer = window.setInterval(() => void refresh(), POLL_MS);
    },
    unmount() {
      window.clearInterval(timer);
      window.clearTimeout(pending);
      const ws = socket;
      socket = null;
      ws?.close();
      chart?.destroy();
    },
  };
}
