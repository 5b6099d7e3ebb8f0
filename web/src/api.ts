// The API client: the operator token (from the URL fragment `#token=...`, kept in
// sessionStorage) and JSON/text fetches that turn RFC 9457 problems into errors.

const TOKEN_KEY = 'voltex-token';

/** Takes `#token=...` from the URL into sessionStorage and removes it from the URL. */
export function captureToken(): void {
  const hash = window.location.hash;
  if (hash.startsWith('#token=')) {
    const token = decodeURIComponent(hash.slice('#token='.length));
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, '', `${window.location.pathname}#/fleet`);
  }
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string): void {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

/** An API call that failed; `status` 0 is a network error. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function request(path: string): Promise<Response> {
  const headers: Record<string, string> = {};
  const bearer = token();
  if (bearer) headers['Authorization'] = `Bearer ${bearer}`;
  let response: Response;
  try {
    response = await fetch(path, { headers });
  } catch (error) {
    throw new ApiFailure(0, 'network', String(error));
  }
  if (!response.ok) {
    let code = 'http_error';
    let detail = response.statusText;
    try {
      const problem = await response.json();
      code = problem.code ?? code;
      detail = problem.detail ?? problem.title ?? detail;
    } catch {
      // Not a problem document: keep the status text.
    }
    throw new ApiFailure(response.status, code, `${response.status} ${code}: ${detail}`);
  }
  return response;
}

export async function getJson<T>(path: string): Promise<T> {
  return (await request(path)).json() as Promise<T>;
}

export async function getBlob(path: string): Promise<Blob> {
  return (await request(path)).blob();
}

/** The WebSocket URL of the market-data stream (browsers cannot set headers). */
export function streamUrl(product: number): string {
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  const bearer = token();
  const auth = bearer ? `&token=${encodeURIComponent(bearer)}` : '';
  return `${scheme}://${window.location.host}/api/v1/stream?product=${product}${auth}`;
}

/** The WebSocket URL of the fleet events alone (`market=false`: no market data). */
export function fleetStreamUrl(): string {
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  const bearer = token();
  const auth = bearer ? `&token=${encodeURIComponent(bearer)}` : '';
  return `${scheme}://${window.location.host}/api/v1/stream?market=false${auth}`;
}

// Shapes of the API answers the pages read.

export interface FleetCounts {
  n_devices: number;
  n_online: number;
}

export interface PowerPoint {
  at_ns: number;
  measured_w: number | null;
  plan_w: number;
  n_reporting: number;
}

export interface FleetSummary {
  n_devices: number;
  n_online: number;
  soc_histogram: number[];
  power: PowerPoint[];
  as_of_ns: number;
}

export interface DeviceRow {
  device_id: string;
  name: string;
  capacity_wh: number;
  max_charge_w: number;
  max_discharge_w: number;
  online: boolean;
  last_seen_at_ns: number | null;
  last_soc_wh: number | null;
  latest_schedule_version: number;
}

export interface ScheduleRow {
  device_id: string;
  version: number;
  issued_at_ns: number;
  valid_from_ns: number;
  valid_until_ns: number;
  status: string;
  status_at_ns: number;
  attempts: number;
}

export interface AckRow {
  device_id: string;
  version?: number;
  schedule_version?: number;
  status: string;
  [key: string]: unknown;
}

export interface ProductInfo {
  product_id: number;
  delivery_start_ns: number;
  delivery_end_ns: number;
  delivery_start: string;
  gate_closure_ns: number;
  phase: string;
}

export interface Level {
  price_eur_per_mwh: string;
  qty_mw: string;
  n_orders: number;
}

export interface Depth {
  product: number;
  bids: Level[];
  asks: Level[];
  as_of_event_seq: number;
}

export interface Trade {
  event_seq: number;
  trade_id: number;
  at_ns: number;
  price_eur_per_mwh: string;
  qty_mw: string;
  aggressor_side: string;
}

export interface OrderView {
  order_id: number;
  product: number;
  side: string;
  price_eur_per_mwh: string;
  [key: string]: unknown;
}

export interface VersionProgress {
  version: number;
  n_devices: number;
  by_status: Record<string, number>;
  issued_at_ns: number;
  success_rate: number;
}

export interface SlowDevice {
  device_id: string;
  version: number;
  status: string;
  latency_ms: number;
  attempts: number;
}

export interface RolloutSummary {
  versions: VersionProgress[];
  slowest: SlowDevice[];
}

export interface AggregateRow {
  period_start_ns: number;
  period_len_s: number;
  device_id: string | null;
  charged_wh: number;
  discharged_wh: number;
  n_schedules: number;
  n_acks_completed: number;
  n_acks_failed: number;
  revenue_cents: number;
}

export interface Alert {
  name: string;
  severity: string;
  /** `pending`: the condition holds, for less than the rule's `for`. */
  state: 'firing' | 'pending' | 'ok';
  expr: string;
  value: number | null;
  for_s: number;
  /** Since when the condition holds, s (server time base). */
  active_since_s: number | null;
  summary: string;
}

/** One delivery period of the day-ahead cycle (`/api/v1/dashboard/dayahead`). */
export interface DayAheadPeriod {
  period_start_ns: number;
  period_len_s: number;
  delivery_day: string;
  delivery_hour: number;
  clearing_price_cents_per_mwh: number;
  forecast_price_cents_per_mwh: number;
  model_name: string;
  model_version: number;
  /** What the day-ahead auction awarded the fleet, W (+ sell). */
  committed_w: number;
  /** What the plan wanted (and bid, unless the risk limit refused the hour), W; null
   * on rows from before the cycle bid. */
  planned_w: number | null;
  perfect_foresight_w: number;
  trading_cents: number;
  perfect_foresight_cents: number;
  /** Absent (null) until the period's day is settled. */
  delivered_w: number | null;
  imbalance_cents: number | null;
  wear_cents: number | null;
}

/** A model of the registry (`/api/v1/ml/models`). */
export interface MlModel {
  name: string;
  version: number;
  kind: string;
  trained_at_ns: number;
  parameters: Record<string, unknown>;
  metrics: Record<string, unknown>;
}

/** A fill of an account (`/api/v1/accounts/{account}/fills`). */
export interface Fill {
  /** `continuous` (a trade of the book) or `auction` (a day-ahead award). */
  source: 'continuous' | 'auction';
  product_id: number;
  /** Null for an auction award. */
  trade_id: number | null;
  event_seq: number;
  at_ns: number;
  /** Null for an auction award. */
  order_id: number | null;
  side: string;
  /** 0.01 EUR/MWh (an award's is the clearing price). */
  price_ticks: number;
  qty_lots: number;
  /** Null for an auction award. */
  aggressor: boolean | null;
}

/** A device in fault (`/api/v1/dashboard/faults`). */
export interface DeviceFault {
  device_id: string;
  at_ns: number;
  health_flags: number;
  flags: string[];
  soc_wh: number;
  temperature_mc: number;
}

/** A telemetry sample (`/api/v1/devices/{id}/telemetry`). */
export interface TelemetrySample {
  at_ns: number;
  soc_wh: number;
  power_w: number;
  temperature_mc: number;
  health_flags: number;
}
