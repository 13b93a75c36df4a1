// The morning page: revenue, orders, conversion, visitors over the last 30 days against
// the 30 before, who is at risk of churning, the revenue trend with its forecast and
// interval, and events as they arrive.
import { useMemo } from "react";
import type { EChartsOption } from "echarts";
import { api, call, query, type Schemas } from "../api/client";
import { useSession } from "../auth";
import { Chart } from "../components/Chart";
import { Empty, Loaded, Loading, useLoad, type Load } from "../components/States";
import { LiveFeed } from "../components/LiveFeed";
import { DAY, change, count, day, endOfToday, money, percent, type Locale } from "../format";

type Commerce = Schemas["CommerceResult"];
interface Forecast {
  series?: { points?: { start?: string; value?: number; lower?: number; upper?: number }[] }[];
}

/// Whole days: the last 30 up to today's end, and the 30 before.
export function ranges(now: Date) {
  const end = endOfToday(now);
  const start = new Date(end.getTime() - 30 * DAY);
  const before = new Date(start.getTime() - 30 * DAY);
  return { current: [start, end], previous: [before, start] } as const;
}

function commerce(from: Date, to: Date): Promise<Commerce> {
  return query<Commerce>({
    kind: "commerce",
    from: from.toISOString(),
    to: to.toISOString(),
    interval: "day",
    products_limit: 5,
  });
}

export function Kpi({
  label,
  value,
  delta,
}: {
  label: string;
  value: string;
  delta: number | null;
}) {
  const dir = delta == null ? "" : delta >= 0 ? "up" : "down";
  return (
    <div className="kpi" role="group" aria-label={label}>
      <div className="kpi-label">{label}</div>
      <div className="kpi-value" data-testid={`kpi-${label}`}>
        {value}
      </div>
      <div className={`kpi-delta ${dir}`}>
        {delta == null ? "no earlier data" : `${delta >= 0 ? "▲" : "▼"} ${percent(Math.abs(delta))} vs previous 30 days`}
      </div>
    </div>
  );
}

interface RiskSummary {
  churn?: { scored: number; at_risk: number; value_at_risk: number; threshold: number };
}

/// The churn figure: persons at risk (from the last training), their share and the value
/// they hold.
export function ChurnKpi({ load, locale }: { load: Load<RiskSummary>; locale: Locale }) {
  const c = load.state === "done" ? load.data.churn : undefined;
  return (
    <div className="kpi" role="group" aria-label="At risk of churning">
      <div className="kpi-label">At risk of churning</div>
      <div className="kpi-value" data-testid="kpi-At risk">
        {load.state === "loading" ? "…" : c ? count(c.at_risk) : "—"}
      </div>
      <div className="kpi-delta">
        {load.state === "loading"
          ? "Loading"
          : c && c.scored > 0
            ? `${percent(c.at_risk / c.scored)} of ${count(c.scored)} scored · ${money(c.value_at_risk, locale)} of value a year`
            : "after the models' first training"}
      </div>
    </div>
  );
}

function revenueChart(c: Commerce, f: Forecast | null, l: Locale): EChartsOption {
  const actual = c.buckets.map((b, i) => [day(b, l), c.revenue[i]] as [string, number]);
  const points = f?.series?.[0]?.points ?? [];
  const fx = points.map((p) => day(`${p.start}T12:00:00Z`, l));
  return {
    tooltip: { trigger: "axis" },
    legend: { data: ["Revenue", "Forecast"] },
    grid: { left: 60, right: 20, top: 40, bottom: 30 },
    xAxis: { type: "category", data: [...actual.map((a) => a[0]), ...fx] },
    yAxis: { type: "value" },
    series: [
      { name: "Revenue", type: "line", data: actual.map((a) => a[1]), showSymbol: false },
      {
        name: "Forecast",
        type: "line",
        data: [...actual.map(() => null), ...points.map((p) => p.value ?? null)],
        lineStyle: { type: "dashed" },
        showSymbol: false,
      },
      {
        name: "lower",
        type: "line",
        stack: "interval",
        data: [...actual.map(() => null), ...points.map((p) => p.lower ?? null)],
        lineStyle: { opacity: 0 },
        showSymbol: false,
        tooltip: { show: false },
      },
      {
        name: "95% interval",
        type: "line",
        stack: "interval",
        data: [
          ...actual.map(() => null),
          ...points.map((p) => (p.upper ?? 0) - (p.lower ?? 0)),
        ],
        lineStyle: { opacity: 0 },
        areaStyle: { opacity: 0.15 },
        showSymbol: false,
      },
    ],
  };
}

function RevenueChart({ now, forecast, locale }: { now: Commerce; forecast: Forecast | null; locale: Locale }) {
  // Drawn again only when its data changes (not at every render of the page).
  const option = useMemo(() => revenueChart(now, forecast, locale), [now, forecast, locale]);
  return <Chart label="Daily revenue over the last 30 days and its forecast" option={option} />;
}

export function Overview() {
  const s = useSession();
  const r = useMemo(() => ranges(new Date()), []);
  const [load, reload] = useLoad(
    () =>
      Promise.all([
        commerce(r.current[0], r.current[1]),
        commerce(r.previous[0], r.previous[1]),
      ]),
    [s.tokens.tenant_id],
  );
  const [forecast] = useLoad(
    () =>
      call(() =>
        api.GET("/api/v1/forecasts", { params: { query: { metric: "revenue", interval: "day" } } }),
      ) as Promise<Forecast>,
    [s.tokens.tenant_id],
  );
  const [risk] = useLoad(
    () => call(() => api.GET("/api/v1/predictions/summary")) as Promise<RiskSummary>,
    [s.tokens.tenant_id],
  );
  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Overview</h1>
      <Loaded load={load} reload={reload}>
        {([now, before]) =>
          now.totals.visitors === 0 ? (
            <Empty>No events in the last 30 days yet. Send some with a write key.</Empty>
          ) : (
            <>
              <div className="kpis">
                <Kpi
                  label="Revenue"
                  value={money(now.totals.revenue, s.locale)}
                  delta={change(now.totals.revenue, before.totals.revenue)}
                />
                <Kpi
                  label="Orders"
                  value={count(now.totals.orders)}
                  delta={change(now.totals.orders, before.totals.orders)}
                />
                <Kpi
                  label="Conversion rate"
                  value={percent(now.totals.conversion_rate)}
                  delta={change(now.totals.conversion_rate ?? 0, before.totals.conversion_rate ?? 0)}
                />
                <Kpi
                  label="Active persons"
                  value={count(now.totals.visitors)}
                  delta={change(now.totals.visitors, before.totals.visitors)}
                />
                <ChurnKpi load={risk} locale={s.locale} />
              </div>
              <div className="card">
                <h2>Revenue, and the next 30 days</h2>
                {forecast.state === "loading" && <Loading what="Forecast" />}
                {forecast.state === "error" && (
                  <p className="hint">
                    The forecast appears once the models are trained (a few minutes after the
                    start, then daily).
                  </p>
                )}
                <RevenueChart
                  now={now}
                  forecast={forecast.state === "done" ? forecast.data : null}
                  locale={s.locale}
                />
              </div>
            </>
          )
        }
      </Loaded>
      <div className="card">
        <h2>Live events</h2>
        <LiveFeed />
      </div>
    </section>
  );
}

