// Alerts: the Prometheus rules of deploy/ evaluated by the server on its own metrics
// (GET /api/v1/alerts), firing first.
import { ApiFailure, getJson, type Alert } from '../api';
import { el, errorBox, table } from '../format';
import type { Page } from '../page';

export function alertsPage(): Page {
  const root = el('section', { 'aria-labelledby': 'alerts-title' });
  const box = el('div', { id: 'alerts-table', 'aria-live': 'polite' });
  let timer = 0;

  async function refresh(): Promise<void> {
    try {
      const answer = await getJson<{ alerts: Alert[] }>('/api/v1/alerts');
      const alerts = [...answer.alerts].sort((a, b) => Number(b.state === 'firing') - Number(a.state === 'firing') || a.name.localeCompare(b.name));
      box.replaceChildren(
        table(
          `Alert rules (${alerts.filter((a) => a.state === 'firing').length} firing)`,
          ['State', 'Name', 'Severity', 'Value', 'Summary', 'Expression'],
          alerts.map((a) => [
            el('span', { class: `badge ${a.state === 'firing' ? 'firing' : a.state === 'pending' ? 'pending' : 'ok'}` }, a.state),
            a.name,
            a.severity,
            // Four significant digits: a ratio or a mean in s, not a float dump.
            a.value === null ? '—' : String(Number(a.value.toPrecision(4))),
            a.summary,
            el('code', {}, a.expr),
          ]),
          'no rules',
        ),
      );
    } catch (error) {
      if (error instanceof ApiFailure && error.status === 404) {
        box.replaceChildren(el('p', { class: 'muted', id: 'alerts-unavailable' }, 'alerts endpoint unavailable'));
      } else {
        box.replaceChildren(errorBox(`alerts: ${(error as Error).message}`));
      }
    }
  }

  return {
    title: 'Alerts',
    mount(main) {
      root.replaceChildren(el('h1', { id: 'alerts-title' }, 'Alerts'), box);
      main.append(root);
      void refresh();
      timer = window.setInterval(() => void refresh(), 5000);
    },
    unmount() {
      window.clearInterval(timer);
    },
  };
}
