// Formatting and small DOM helpers shared by the pages.

/** Creates an element with attributes and children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** A `<time>`: the user's local time zone shown, UTC in the title (hover). */
export function timeEl(ns: number | null | undefined): HTMLElement | string {
  if (ns === null || ns === undefined) return '—';
  const date = new Date(ns / 1e6);
  const utc = `${date.toISOString().replace('T', ' ').slice(0, 19)} UTC`;
  return el('time', { datetime: date.toISOString(), title: utc }, date.toLocaleString());
}

/** Seconds since the epoch (uPlot's x unit) of UTC nanoseconds. */
export function nsToS(ns: number): number {
  return ns / 1e9;
}

export function fmtPct(fraction: number): string {
  return `${(fraction * 100).toFixed(1)} %`;
}

export function fmtNum(value: number, digits = 0): string {
  return value.toLocaleString(undefined, {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** A table with a caption; `rows` are cells already formatted. */
export function table(
  caption: string,
  headers: string[],
  rows: (Node | string)[][],
  emptyText = 'nothing yet',
): HTMLTableElement {
  const head = el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', { scope: 'col' }, h))));
  const body = el('tbody');
  if (rows.length === 0) {
    body.append(el('tr', {}, el('td', { colspan: String(headers.length), class: 'muted' }, emptyText)));
  }
  for (const row of rows) body.append(el('tr', {}, ...row.map((cell) => el('td', {}, cell))));
  return el('table', {}, el('caption', {}, caption), head, body);
}

/** A labelled number card. */
export function stat(label: string, value: string, id: string): HTMLElement {
  return el('div', { class: 'stat' }, el('span', { class: 'label' }, label), el('span', { class: 'value', id }, value));
}

export function errorBox(message: string): HTMLElement {
  return el('p', { class: 'error', role: 'status' }, message);
}
