// Numbers, money and dates as the tenant sees them: its currency, its time zone, the
// browser's locale.

export interface Locale {
  currency: string;
  timeZone: string;
  locale?: string;
}

export function money(value: number | null | undefined, l: Locale): string {
  if (value == null || !Number.isFinite(value)) return "—";
  return new Intl.NumberFormat(l.locale, {
    style: "currency",
    currency: l.currency,
    maximumFractionDigits: Math.abs(value) >= 1000 ? 0 : 2,
  }).format(value);
}

export function count(value: number | null | undefined, l?: Pick<Locale, "locale">): string {
  if (value == null || !Number.isFinite(value)) return "—";
  return new Intl.NumberFormat(l?.locale, { maximumFractionDigits: 1 }).format(value);
}

export function percent(ratio: number | null | undefined, l?: Pick<Locale, "locale">): string {
  if (ratio == null || !Number.isFinite(ratio)) return "—";
  return new Intl.NumberFormat(l?.locale, {
    style: "percent",
    maximumFractionDigits: 1,
  }).format(ratio);
}

/// A date and time in the tenant's zone, e.g. "1 Dec 2026, 09:30".
export function dateTime(iso: string | null | undefined, l: Locale): string {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return new Intl.DateTimeFormat(l.locale, {
    timeZone: l.timeZone,
    dateStyle: "medium",
    timeStyle: "short",
  }).format(d);
}

/// A day in the tenant's zone, e.g. "1 Dec".
export function day(iso: string, l: Locale): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return new Intl.DateTimeFormat(l.locale, {
    timeZone: l.timeZone,
    month: "short",
    day: "numeric",
  }).format(d);
}

/// The change from `previous` to `current` as a signed ratio (null when there is no base).
export function change(current: number, previous: number): number | null {
  if (!Number.isFinite(previous) || previous === 0) return null;
  return (current - previous) / Math.abs(previous);
}

/// A day in milliseconds.
export const DAY = 86_400_000;

/// The end of the current UTC day: where the dashboard's "last N days" ranges stop.
export function endOfToday(now = new Date()): Date {
  return new Date(Math.ceil(now.getTime() / DAY) * DAY);
}
