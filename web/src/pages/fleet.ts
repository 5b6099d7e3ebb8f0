// Fleet: devices online/offline, SoC histogram, fleet power against the plan, devices
// in fault, and a device search showing its schedules, acks and telemetry history.
import type uPlot from 'uplot';
import { ApiFailure, getJson, type AckRow, type DeviceFault, type DeviceRow, type FleetSummary, type ScheduleRow, type TelemetrySample } from '../api';
import { makeChart } from '../chart';
import { el, errorBox, fmtNum, nsToS, stat, table, timeEl } from '../format';
import type { Page } from '../page';

const POLL_MS = 2000;
/** Devices in fault listed at most. */
const FAULTS_SHOWN = 50;
/** Telemetry history shown for a device (the last two hours). */
const TELEMETRY_WINDOW_MS = 2 * 3600 * 1000;

export function fleetPage(): Page {
  let timer = 0;
  let soc: uPlot | null = null;
  let power: uPlot | null = null;
  let telemetryChart: uPlot | null = null;
  const root = el('section', { 'aria-labelledby': 'fleet-title' });
  const faultsBox = el('div', { id: 'faults' });

  async function refreshFaults(): Promise<void> {
    try {
      const faults = await getJson<DeviceFault[]>(`/api/v1/dashboard/faults?limit=${FAULTS_SHOWN}`);
      root.dataset.faults = String(faults.length);
      faultsBox.replaceChildren(
        table(
          `Devices in fault (newest telemetry; at most ${FAULTS_SHOWN})`,
          ['Device', 'Since sample', 'Flags', 'SoC (Wh)', 'Temperature (°C)'],
          faults.map((f) => [f.device_id, timeEl(f.at_ns), f.flags.join(', '), fmtNum(f.soc_wh), fmtNum(f.temperature_mc / 1000, 1)]),
          'no device reports a fault',
        ),
      );
    } catch (error) {
      faultsBox.replaceChildren(errorBox(`faults: ${(error as Error).message}`));
    }
  }

  async function refresh(status: HTMLElement): Promise<void> {
    try {
      const summary = await getJson<FleetSummary>('/api/v1/dashboard/fleet?window_s=600&bucket_s=5');
      const offline = summary.n_devices - summary.n_online;
      (root.querySelector('#fleet-n') as HTMLElement).textContent = fmtNum(summary.n_devices);
      (root.querySelector('#fleet-online') as HTMLElement).textContent = fmtNum(summary.n_online);
      (root.querySelector('#fleet-offline') as HTMLElement).textContent = fmtNum(offline);
      const bins = summary.soc_histogram.map((_, index) => index * 10 + 5);
      soc?.setData([bins, summary.soc_histogram]);
      const xs = summary.power.map((point) => nsToS(point.at_ns));
      const measured = summary.power.map((point) => (point.measured_w === null ? null : point.measured_w / 1000));
      const plan = summary.power.map((point) => point.plan_w / 1000);
      power?.setData([xs, measured, plan]);
      root.dataset.updates = String(Number(root.dataset.updates ?? '0') + 1);
      status.textContent = '';
      void refreshFaults();
    } catch (error) {
      status.replaceChildren(errorBox(`fleet summary: ${(error as Error).message}`));
    }
  }

  async function search(id: string, out: HTMLElement): Promise<void> {
    out.replaceChildren(el('p', { class: 'muted' }, `looking up ${id}…`));
    try {
      const enc = encodeURIComponent(id);
      const fromNs = BigInt(Date.now() - TELEMETRY_WINDOW_MS) * 1_000_000n;
      const [device, schedules, acks, samples] = await Promise.all([
        getJson<{ device: DeviceRow; latest_telemetry: Record<string, number> | null }>(`/api/v1/devices/${enc}`),
        getJson<ScheduleRow[]>(`/api/v1/schedules/${enc}?limit=5`),
        getJson<AckRow[]>(`/api/v1/devices/${enc}/acks?limit=20`),
        getJson<TelemetrySample[]>(`/api/v1/devices/${enc}/telemetry?from_ns=${fromNs}&limit=1000`),
      ]);
      const telemetryBox = el('div', { class: 'chart', id: 'telemetry-chart' });
      const d = device.device;
      const t = device.latest_telemetry;
      out.replaceChildren(
        el('h3', { id: 'device-result' }, `${d.device_id} — ${d.name}`),
        el(
          'p',
          {},
          `${d.online ? 'online' : 'offline'} · capacity ${fmtNum(d.capacity_wh)} Wh · SoC `,
          d.last_soc_wh === null ? '—' : `${fmtNum(d.last_soc_wh)} Wh`,
          t ? ` · power ${fmtNum(Number(t.power_w))} W` : '',
          ' · last seen ',
          timeEl(d.last_seen_at_ns),
        ),
        telemetryBox,
        table(
          'Schedule versions (newest first)',
          ['Version', 'Status', 'Issued', 'Valid from', 'Valid until', 'Attempts'],
          schedules.map((s) => [String(s.version), s.status, timeEl(s.issued_at_ns), timeEl(s.valid_from_ns), timeEl(s.valid_until_ns), String(s.attempts)]),
        ),
        table(
          'Acks (newest first)',
          ['Version', 'Status', 'Agent time', 'Received'],
          acks.map((a) => [String(a.version ?? ''), String(a.status), timeEl(a.at_ns as number), timeEl(a.received_at_ns as number)]),
        ),
      );
      telemetryChart?.destroy();
      telemetryChart = makeChart(telemetryBox, `Telemetry of ${d.device_id} (last 2 h, ${samples.length} samples)`, 'time (local)', 'kWh · kW', [
        { label: 'SoC (kWh)', color: '#3b82f6' },
        { label: 'power (kW)', color: '#10b981' },
      ], true);
      telemetryChart.setData([samples.map((x) => nsToS(x.at_ns)), samples.map((x) => x.soc_wh / 1000), samples.map((x) => x.power_w / 1000)]);
      // The window, not the samples, sets the time axis (one sample would span years).
      const nowS = Date.now() / 1000;
      telemetryChart.setScale('x', { min: nowS - TELEMETRY_WINDOW_MS / 1000, max: nowS });
      out.dataset.samples = String(samples.length);
    } catch (error) {
      const message = error instanceof ApiFailure && error.status === 404 ? `no device ${id}` : (error as Error).message;
      out.replaceChildren(errorBox(message));
    }
  }

  return {
    title: 'Fleet',
    mount(main) {
      const status = el('div', { 'aria-live': 'polite' });
      const socBox = el('div', { class: 'chart', id: 'soc-chart' });
      const powerBox = el('div', { class: 'chart', id: 'power-chart' });
      const input = el('input', { id: 'device-search', type: 'search', list: 'device-ids', placeholder: 'device id, e.g. sim-00001', autocomplete: 'off' });
      const list = el('datalist', { id: 'device-ids' });
      const result = el('div', { id: 'device-detail', 'aria-live': 'polite' });
      const form = el(
        'form',
        { class: 'search', role: 'search' },
        el('label', { for: 'device-search' }, 'Find device'),
        input,
        list,
        el('button', { type: 'submit' }, 'Search'),
      );
      form.addEventListener('submit', (event) => {
        event.preventDefault();
        const id = input.value.trim();
        if (id) void search(id, result);
      });
      root.replaceChildren(
        el('h1', { id: 'fleet-title' }, 'Fleet'),
        el('div', { class: 'stats' }, stat('Devices', '…', 'fleet-n'), stat('Online', '…', 'fleet-online'), stat('Offline', '…', 'fleet-offline')),
        status,
        el('div', { class: 'grid2' }, socBox, powerBox),
        faultsBox,
        el('h2', {}, 'Device'),
        form,
        result,
      );
      main.append(root);
      soc = makeChart(socBox, 'State of charge distribution', 'SoC bin centre (%)', 'devices (count)', [{ label: 'devices', color: '#3b82f6', bars: true }], false);
      power = makeChart(powerBox, 'Fleet power vs plan', 'time (local)', 'power (kW, + discharge)', [
        { label: 'measured (kW)', color: '#10b981', spanGaps: true },
        { label: 'plan (kW)', color: '#f59e0b' },
      ], true);
      void getJson<DeviceRow[]>('/api/v1/devices?limit=50')
        .then((devices) => list.replaceChildren(...devices.map((d) => el('option', { value: d.device_id }))))
        .catch(() => undefined);
      void refresh(status);
      timer = window.setInterval(() => void refresh(status), POLL_MS);
    },
    unmount() {
      window.clearInterval(timer);
      soc?.destroy();
      power?.destroy();
      telemetryChart?.destroy();
    },
  };
}
