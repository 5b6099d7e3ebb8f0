// Market: the L2 ladder of one product, live over the WebSocket stream (REST
// snapshot, then increments newer than it), recent trades with a price chart, the
// day-ahead clearing prices of the replayed market, and an account's open orders and
// fills (book trades and day-ahead auction awards). Stream messages only update in-memory state; the DOM is
// redrawn at most once per animation frame, so a burst of updates costs one paint.
import type uPlot from 'uplot';
import { ApiFailure, getJson, streamUrl, type DayAheadPeriod, type Depth, type Fill, type OrderView, type ProductInfo, type Trade } from '../api';
import { makeChart } from '../chart';
import { el, errorBox, fmtNum, nsToS, table, timeEl } from '../format';
import type { Page } from '../page';

const LEVELS_SHOWN = 10;
const TRADES_KEPT = 30;
const CHART_POINTS_MAX = 500;
const SLOW_REDRAW_MS = 250;
/** Day-ahead periods charted (a replayed week). */
const DAYAHEAD_PERIODS = 24 * 7;
const DAYAHEAD_REFRESH_MS = 5000;

/** The order column of a fill: a day-ahead award has no order. */
function fillOrder(fill: Fill): string {
  return fill.source === 'auction' ? 'day-ahead award' : String(fill.order_id);
}

/** The role column of a fill: taker or maker in the book, or the auction. */
function fillRole(fill: Fill): string {
  if (fill.source === 'auction') return 'auction';
  return fill.aggressor ? 'taker' : 'maker';
}

interface StreamMessage {
  type: 'depth' | 'trade' | 'phase' | 'order' | 'lagged';
  event_seq?: number;
  product?: number;
  side?: string;
  price_eur_per_mwh?: string;
  qty_mw?: string;
  n_orders?: number;
  trade_id?: number;
  aggressor_side?: string;
  at_ns?: number;
  phase?: string;
  order_id?: number;
  event?: string;
}

export function marketPage(): Page {
  const root = el('section', { 'aria-labelledby': 'market-title', id: 'market' });
  let socket: WebSocket | null = null;
  let ordersTimer = 0;
  let frame = 0;
  let chart: uPlot | null = null;
  let dayaheadChart: uPlot | null = null;
  let dayaheadTimer = 0;
  let product = 0;
  let snapshotSeq = 0;
  const bids = new Map<string, { qty: string; n: number }>();
  const asks = new Map<string, { qty: string; n: number }>();
  let trades: Trade[] = [];
  const chartX: number[] = [];
  const chartY: number[] = [];
  let nMessages = 0;
  let nRenders = 0;
  let dirty = false;
  let slowDrawnAt = 0;
  let slowTimer = 0;

  const select = el('select', { id: 'product-select' });
  const ladderBox = el('div', { id: 'ladder', 'aria-live': 'off' });
  const tradesBox = el('div', { id: 'trades' });
  const ordersBox = el('div', { id: 'orders' });
  const fillsBox = el('div', { id: 'fills' });
  const dayaheadBox = el('div', { id: 'dayahead-day' });
  const status = el('p', { class: 'muted', id: 'stream-status', role: 'status' }, 'connecting…');
  const account = el('input', { id: 'account', type: 'number', min: '1', value: '1', inputmode: 'numeric' });

  function scheduleRender(): void {
    dirty = true;
    if (frame === 0) frame = requestAnimationFrame(render);
  }

  function render(): void {
    frame = 0;
    if (!dirty) return;
    dirty = false;
    nRenders += 1;
    const byPrice = (a: [string, unknown], b: [string, unknown]) => Number(b[0]) - Number(a[0]);
    const bidRows = [...bids.entries()].sort(byPrice).slice(0, LEVELS_SHOWN);
    const askRows = [...asks.entries()].sort(byPrice).reverse().slice(0, LEVELS_SHOWN).reverse();
    const rows: (string | Node)[][] = [
      ...askRows.map(([price, level]) => ['', '', price, level.qty, String(level.n)]),
      ...bidRows.map(([price, level]) => [String(level.n), level.qty, price, '', '']),
    ];
    const ladder = table(
      `Order book, product ${product} (L2, best ${LEVELS_SHOWN} levels per side)`,
      ['Bid orders', 'Bid (MW)', 'Price (EUR/MWh)', 'Ask (MW)', 'Ask orders'],
      rows,
      'empty book',
    );
    ladder.classList.add('ladder');
    ladderBox.replaceChildren(ladder);
    root.dataset.messages = String(nMessages);
    root.dataset.renders = String(nRenders);
    root.dataset.levels = String(bids.size + asks.size);
    // Trades and the price chart change less often than the book: redraw them at
    // most every SLOW_REDRAW_MS (a burst of trades costs one table and one chart).
    const now = performance.now();
    if (now - slowDrawnAt < SLOW_REDRAW_MS) {
      if (slowTimer === 0) {
        slowTimer = window.setTimeout(() => {
          slowTimer = 0;
          scheduleRender();
        }, SLOW_REDRAW_MS - (now - slowDrawnAt));
      }
      return;
    }
    slowDrawnAt = now;
    tradesBox.replaceChildren(
      table(
        'Recent trades',
        ['Time', 'Price (EUR/MWh)', 'Qty (MW)', 'Aggressor'],
        trades.map((t) => [timeEl(t.at_ns), t.price_eur_per_mwh, t.qty_mw, t.aggressor_side]),
      ),
    );
    chart?.setData([chartX, chartY]);
  }

  function addTrade(trade: Trade): void {
    trades = [trade, ...trades].slice(0, TRADES_KEPT);
    chartX.push(nsToS(trade.at_ns));
    chartY.push(Number(trade.price_eur_per_mwh));
    if (chartX.length > CHART_POINTS_MAX) {
      chartX.shift();
      chartY.shift();
    }
  }

  function apply(message: StreamMessage): void {
    nMessages += 1;
    if (message.type === 'lagged') {
      void snapshot();
      return;
    }
    if (message.product !== product || (message.event_seq ?? 0) <= snapshotSeq) return;
    if (message.type === 'depth') {
      const book = message.side === 'buy' ? bids : asks;
      const price = message.price_eur_per_mwh ?? '';
      if (Number(message.qty_mw) === 0) book.delete(price);
      else book.set(price, { qty: message.qty_mw ?? '', n: message.n_orders ?? 0 });
    } else if (message.type === 'trade') {
      addTrade({
        event_seq: message.event_seq ?? 0,
        trade_id: message.trade_id ?? 0,
        at_ns: message.at_ns ?? 0,
        price_eur_per_mwh: message.price_eur_per_mwh ?? '',
        qty_mw: message.qty_mw ?? '',
        aggressor_side: message.aggressor_side ?? '',
      });
    }
    scheduleRender();
  }

  async function snapshot(): Promise<void> {
    const depth = await getJson<Depth>(`/api/v1/products/${product}/depth?levels=50`);
    bids.clear();
    asks.clear();
    for (const level of depth.bids) bids.set(level.price_eur_per_mwh, { qty: level.qty_mw, n: level.n_orders });
    for (const level of depth.asks) asks.set(level.price_eur_per_mwh, { qty: level.qty_mw, n: level.n_orders });
    snapshotSeq = depth.as_of_event_seq;
    scheduleRender();
  }

  async function connect(): Promise<void> {
    socket?.close();
    trades = [];
    chartX.length = 0;
    chartY.length = 0;
    // Subscribe first, then snapshot: increments older than the snapshot are dropped.
    const ws = new WebSocket(streamUrl(product));
    socket = ws;
    ws.onopen = () => {
      status.textContent = `live: product ${product}`;
    };
    ws.onclose = () => {
      if (socket === ws) status.textContent = 'stream closed';
    };
    ws.onmessage = (event) => {
      try {
        apply(JSON.parse(String(event.data)) as StreamMessage);
      } catch {
        // A frame that is not JSON is ignored.
      }
    };
    try {
      await snapshot();
      const recent = await getJson<Trade[]>(`/api/v1/dashboard/trades/${product}?limit=${TRADES_KEPT}`);
      for (const trade of [...recent].reverse()) addTrade(trade);
      scheduleRender();
    } catch (error) {
      status.replaceChildren(errorBox(`snapshot: ${(error as Error).message}`));
    }
  }

  async function refreshOrders(): Promise<void> {
    try {
      const orders = await getJson<OrderView[]>(`/api/v1/orders?account=${encodeURIComponent(account.value)}`);
      ordersBox.replaceChildren(
        table(
          `Open orders of account ${account.value}`,
          ['Order', 'Product', 'Side', 'Price (EUR/MWh)', 'Qty (MW)', 'Remaining (MW)'],
          orders.slice(0, 50).map((o) => [String(o.order_id), String(o.product), String(o.side), o.price_eur_per_mwh, String(o.qty_mw), String(o.remaining_mw)]),
          'no open orders',
        ),
      );
    } catch (error) {
      ordersBox.replaceChildren(errorBox(`orders: ${(error as Error).message}`));
    }
    try {
      const fills = await getJson<Fill[]>(`/api/v1/accounts/${encodeURIComponent(account.value)}/fills?limit=30`);
      fillsBox.replaceChildren(
        table(
          `Fills of account ${account.value} (newest first)`,
          ['Time', 'Product', 'Order', 'Side', 'Price (EUR/MWh)', 'Qty (lots)', 'Role'],
          fills.map((f) => [timeEl(f.at_ns), String(f.product_id), fillOrder(f), f.side, fmtNum(f.price_ticks / 100, 2), fmtNum(f.qty_lots), fillRole(f)]),
          'no fills',
        ),
      );
    } catch (error) {
      fillsBox.replaceChildren(errorBox(`fills: ${(error as Error).message}`));
    }
  }

  async function refreshDayAhead(): Promise<void> {
    try {
      const periods = await getJson<DayAheadPeriod[]>(`/api/v1/dashboard/dayahead?limit=${DAYAHEAD_PERIODS}`);
      dayaheadChart?.setData([
        periods.map((p) => nsToS(p.period_start_ns)),
        periods.map((p) => p.clearing_price_cents_per_mwh / 100),
      ]);
      const newestDay = periods.length > 0 ? periods[periods.length - 1].delivery_day : '';
      const day = periods.filter((p) => p.delivery_day === newestDay);
      root.dataset.dayaheadPeriods = String(periods.length);
      dayaheadBox.replaceChildren(
        table(
          newestDay ? `Day-ahead auction of ${newestDay} (replayed): clearing prices, the fleet's plan (bid) and its award` : 'Day-ahead auction',
          ['Hour', 'Delivered at', 'Clearing (EUR/MWh)', 'Forecast (EUR/MWh)', 'Planned (kW, + sell)', 'Awarded (kW, + sell)'],
          day.map((p) => [
            `${String(p.delivery_hour).padStart(2, '0')}:00`,
            timeEl(p.period_start_ns),
            fmtNum(p.clearing_price_cents_per_mwh / 100, 2),
            fmtNum(p.forecast_price_cents_per_mwh / 100, 2),
            p.planned_w === null ? '—' : fmtNum(p.planned_w / 1000, 1),
            fmtNum(p.committed_w / 1000, 1),
          ]),
          'no day-ahead day replayed yet',
        ),
      );
    } catch (error) {
      const message = error instanceof ApiFailure && error.status === 403 ? 'day-ahead results need an operator or quant token' : `day-ahead: ${(error as Error).message}`;
      dayaheadBox.replaceChildren(errorBox(message));
    }
  }

  return {
    title: 'Market',
    mount(main) {
      const chartBox = el('div', { class: 'chart', id: 'trade-chart' });
      const dayaheadChartBox = el('div', { class: 'chart', id: 'dayahead-chart' });
      root.replaceChildren(
        el('h1', { id: 'market-title' }, 'Market'),
        el('div', { class: 'controls' }, el('label', { for: 'product-select' }, 'Product'), select, status),
        el('div', { class: 'grid2' }, ladderBox, el('div', {}, chartBox, tradesBox)),
        el('h2', {}, 'Day-ahead clearing prices'),
        dayaheadChartBox,
        dayaheadBox,
        el('h2', {}, 'Own orders and fills'),
        el('div', { class: 'controls' }, el('label', { for: 'account' }, 'Account'), account),
        el('div', { class: 'grid2' }, ordersBox, fillsBox),
      );
      main.append(root);
      chart = makeChart(chartBox, 'Trade prices', 'time (local)', 'price (EUR/MWh)', [{ label: 'trade price (EUR/MWh)', color: '#8b5cf6' }], true);
      dayaheadChart = makeChart(dayaheadChartBox, 'Day-ahead clearing price (replayed market)', 'delivery period (local time)', 'price (EUR/MWh)', [
        { label: 'clearing price (EUR/MWh)', color: '#0ea5e9' },
      ], true);
      select.addEventListener('change', () => {
        product = Number(select.value);
        void connect();
      });
      account.addEventListener('change', () => void refreshOrders());
      void getJson<ProductInfo[]>('/api/v1/products')
        .then((products) => {
          const open = products.filter((p) => p.phase === 'open');
          const shown = open.length > 0 ? open : products;
          select.replaceChildren(
            ...shown.map((p) => el('option', { value: String(p.product_id) }, `${p.product_id}: ${new Date(p.delivery_start_ns / 1e6).toLocaleString()} (${p.phase})`)),
          );
          const wanted = Number(new URLSearchParams(window.location.hash.split('?')[1] ?? '').get('product'));
          product = shown.some((p) => p.product_id === wanted) ? wanted : (shown[0]?.product_id ?? 0);
          select.value = String(product);
          if (shown.length > 0) void connect();
          else status.textContent = 'no products listed';
        })
        .catch((error: Error) => status.replaceChildren(errorBox(`products: ${error.message}`)));
      void refreshOrders();
      ordersTimer = window.setInterval(() => void refreshOrders(), 3000);
      void refreshDayAhead();
      dayaheadTimer = window.setInterval(() => void refreshDayAhead(), DAYAHEAD_REFRESH_MS);
    },
    unmount() {
      const ws = socket;
      socket = null;
      ws?.close();
      window.clearInterval(ordersTimer);
      window.clearInterval(dayaheadTimer);
      dayaheadChart?.destroy();
      if (frame !== 0) cancelAnimationFrame(frame);
      window.clearTimeout(slowTimer);
      chart?.destroy();
    },
  };
}
