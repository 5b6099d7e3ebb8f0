// Entry point: takes the token from the URL fragment, routes `#/page` to a page,
// and keeps the theme (system preference unless the user toggled it).
import './style.css';
import { captureToken, setToken, token } from './api';
import { el } from './format';
import type { Page } from './page';
import { alertsPage } from './pages/alerts';
import { dispatchPage } from './pages/dispatch';
import { fleetPage } from './pages/fleet';
import { marketPage } from './pages/market';
import { pnlPage } from './pages/pnl';

const PAGES: Record<string, () => Page> = {
  fleet: fleetPage,
  market: marketPage,
  dispatch: dispatchPage,
  pnl: pnlPage,
  alerts: alertsPage,
};

const THEME_KEY = 'voltex-theme';
let current: Page | null = null;

function applyTheme(theme: string | null): void {
  if (theme === 'dark' || theme === 'light') document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme(): void {
  const active = document.documentElement.dataset.theme
    ?? (window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
  const next = active === 'dark' ? 'light' : 'dark';
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
  route();
}

function tokenForm(main: HTMLElement): void {
  const input = el('input', { id: 'token-input', type: 'password', autocomplete: 'off', required: '' });
  const form = el(
    'form',
    { class: 'search' },
    el('label', { for: 'token-input' }, 'Operator token'),
    input,
    el('button', { type: 'submit' }, 'Use token'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    setToken(input.value);
    route();
  });
  main.replaceChildren(
    el('h1', {}, 'Sign in'),
    el('p', {}, 'Open the URL `voltex up` prints (it carries the token), or paste a token from `voltex token issue --role operator`.'),
    form,
  );
}

function route(): void {
  const main = document.getElementById('main') as HTMLElement;
  current?.unmount();
  current = null;
  main.replaceChildren();
  const name = window.location.hash.replace(/^#\/?/, '').split('?')[0] || 'fleet';
  for (const link of document.querySelectorAll<HTMLAnchorElement>('nav a')) {
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!token()) {
    tokenForm(main);
    return;
  }
  const make = PAGES[name];
  if (!make) {
    main.append(el('h1', {}, 'Not found'), el('p', {}, `No page ${name}.`));
    return;
  }
  current = make();
  document.title = `${current.title} · Voltex`;
  current.mount(main);
}

captureToken();
applyTheme(localStorage.getItem(THEME_KEY));
document.getElementById('theme-toggle')?.addEventListener('click', toggleTheme);
// The skip link focuses the content; it must not change the route fragment.
document.querySelector('.skip')?.addEventListener('click', (event) => {
  event.preventDefault();
  document.getElementById('main')?.focus();
});
window.addEventListener('hashchange', route);
route();
