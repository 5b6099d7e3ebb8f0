// A page of the dashboard: mounted into <main>, unmounted (timers, sockets, charts
// released) when the user navigates away.
export interface Page {
  title: string;
  mount(main: HTMLElement): void;
  unmount(): void;
}
