// Retention (a cohort heat map), trends (lines or bars, breakdown, the previous period)
// and paths (a sankey around an event): the query API's other kinds, charted.
import { useMemo, useState } from "react";
import type { FormEvent, ReactNode } from "react";
import type { EChartsOption } from "echarts";
import { query, type Schemas } from "../api/client";
import { useSession } from "../auth";
import { AddToDashboard, widgetOf } from "../components/AddToDashboard";
import { Chart } from "../components/Chart";
import { Empty, ErrorState, Loading } from "../components/States";
import { EVENT_LIST, PROPERTY_LIST } from "../components/Suggestions";
import { DAY, count, day, endOfToday, type Locale } from "../format";

/// Runs a query when its form is submitted: the answer, or its loading and error states.
function useQuery<R>() {
  const [state, setState] = useState<{ busy: boolean; error: unknown; data: R | null }>({
    busy: false,
    error: null,
    data: null,
  });
  async function run(body: Record<string, unknown>) {
    setState((s) => ({ ...s, busy: true, error: null }));
    try {
      setState({ busy: false, error: null, data: await query<R>(body) });
    } catch (error) {
      setState({ busy: false, error, data: null });
    }
  }
  return [state, run] as const;
}

function Shown<R>({
  state,
  retry,
  children,
}: {
  state: { busy: boolean; error: unknown; data: R | null };
  retry: () => void;
  children: (data: R) => ReactNode;
}) {
  if (state.error != null) return <ErrorState error={state.error} retry={retry} />;
  if (state.busy && !state.data) return <Loading what="Calculating" />;
  if (!state.data) return <p className="hint">Set the query and press Calculate.</p>;
  return <>{children(state.data)}</>;
}

// --- retention ------------------------------------------------------------------------------

type Retention = Schemas["RetentionResult"];

export function retentionHeatmap(r: Retention, l: Locale): EChartsOption {
  const periods = Math.max(0, ...r.cohorts.map((c) => c.percentages.length));
  const data: [number, number, number][] = [];
  r.cohorts.forEach((c, y) =>
    // The API's shares are fractions of the cohort: shown as percentages.
    c.percentages.forEach((p, x) => data.push([x, y, Math.round(p * 1000) / 10])),
  );
  return {
    tooltip: { position: "top" },
    grid: { left: 110, right: 20, top: 10, bottom: 60 },
    xAxis: { type: "category", data: Array.from({ length: periods }, (_, i) => `+${i}`) },
    yAxis: {
      type: "category",
      inverse: true,
      data: r.cohorts.map((c) => `${day(c.start, l)} (${count(c.size)})`),
    },
    visualMap: { min: 0, max: 100, calculable: true, orient: "horizontal", left: "center", bottom: 0 },
    series: [{ type: "heatmap", data, label: { show: true, formatter: (p) => `${(p.value as number[])[2]}%` } }],
  };
}

export function Retention() {
  const s = useSession();
  const [form, setForm] = useState({ start: "Product Viewed", back: "Order Completed", period: "week", periods: 8 });
  const [state, run] = useQuery<Retention>();
  const body = () => {
    const to = endOfToday();
    const span = form.period === "day" ? DAY : form.period === "week" ? 7 * DAY : 30 * DAY;
    return {
      kind: "retention",
      period: form.period,
      periods: form.periods,
      from: new Date(to.getTime() - form.periods * span).toISOString(),
      start_event: { event: form.start },
      return_event: { event: form.back },
      cohort: "first",
    };
  };
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void run(body());
  };
  return (
    <section aria-labelledby="retention-title">
      <h1 id="retention-title">Retention</h1>
      <form className="card row" onSubmit={submit} aria-label="Retention query">
        <label>
          Cohort by first
          <input list={EVENT_LIST} value={form.start} onChange={(e) => setForm({ ...form, start: e.target.value })} required />
        </label>
        <label>
          Came back to
          <input list={EVENT_LIST} value={form.back} onChange={(e) => setForm({ ...form, back: e.target.value })} required />
        </label>
        <label>
          Period
          <select value={form.period} onChange={(e) => setForm({ ...form, period: e.target.value })}>
            <option value="day">day</option>
            <option value="week">week</option>
            <option value="month">month</option>
          </select>
        </label>
        <label>
          Periods
          <input
            type="number"
            min={1}
            max={52}
            value={form.periods}
            onChange={(e) => setForm({ ...form, periods: Number(e.target.value) })}
          />
        </label>
        <button type="submit" className="primary" disabled={state.busy}>
          Calculate
        </button>
      </form>
      <div className="card">
        {state.data && state.data.cohorts.length > 0 && (
          <AddToDashboard
            widget={() =>
              widgetOf(
                "retention",
                `Retention: ${form.start} → ${form.back} by ${form.period}`,
                body(),
                (new Date(endOfToday()).getTime() - new Date(String(body().from)).getTime()) / DAY,
              )
            }
          />
        )}
        <Shown state={state} retry={() => void run(body())}>
          {(r) =>
            r.cohorts.length === 0 ? (
              <Empty>No cohorts in this range.</Empty>
            ) : (
              <Chart
                label="Retention by cohort"
                height={Math.max(240, 40 * r.cohorts.length + 80)}
                option={retentionHeatmap(r, s.locale)}
              />
            )
          }
        </Shown>
      </div>
    </section>
  );
}

// --- trends ---------------------------------------------------------------------------------

type Trends = Schemas["TrendsResult"];

export function trendsChart(r: Trends, kind: "line" | "bar", l: Locale): EChartsOption {
  const series = r.series.map((s) => ({
    name: s.breakdown ?? (r.series.length === 1 ? "this period" : "(none)"),
    type: kind,
    data: s.values,
    showSymbol: false,
  }));
  const previous = (r.previous?.series ?? []).map((s) => ({
    name: `${s.breakdown ?? "previous period"}${s.breakdown ? " (previous)" : ""}`,
    type: "line" as const,
    data: s.values,
    lineStyle: { type: "dashed" as const },
    showSymbol: false,
  }));
  return {
    tooltip: { trigger: "axis" },
    legend: { type: "scroll" },
    grid: { left: 60, right: 20, top: 40, bottom: 30 },
    xAxis: { type: "category", data: r.buckets.map((b) => day(b, l)) },
    yAxis: { type: "value" },
    series: [...series, ...previous],
  };
}

export function Trends() {
  const s = useSession();
  const [form, setForm] = useState({
    event: "Order Completed",
    metric: "count",
    property: "revenue",
    interval: "day",
    days: 30,
    breakdown: "",
    compare: true,
    chart: "line" as "line" | "bar",
  });
  const [state, run] = useQuery<Trends>();
  const body = () => {
    const to = endOfToday();
    const metric =
      form.metric === "count" || form.metric === "unique_persons"
        ? { kind: form.metric }
        : { kind: form.metric, property: form.property };
    return {
      kind: "trends",
      event: { event: form.event },
      metric,
      interval: form.interval,
      from: new Date(to.getTime() - form.days * DAY).toISOString(),
      to: to.toISOString(),
      compare_previous: form.compare,
      ...(form.breakdown.trim() ? { breakdown: { property: form.breakdown.trim(), limit: 8 } } : {}),
    };
  };
  const option = useMemo(
    () => (state.data ? trendsChart(state.data, form.chart, s.locale) : null),
    [state.data, form.chart, s.locale],
  );
  return (
    <section aria-labelledby="trends-title">
      <h1 id="trends-title">Trends</h1>
      <form
        className="card row"
        aria-label="Trends query"
        onSubmit={(e) => {
          e.preventDefault();
          void run(body());
        }}
      >
        <label>
          Event
          <input list={EVENT_LIST} value={form.event} onChange={(e) => setForm({ ...form, event: e.target.value })} required />
        </label>
        <label>
          Measure
          <select value={form.metric} onChange={(e) => setForm({ ...form, metric: e.target.value })}>
            <option value="count">events</option>
            <option value="unique_persons">persons</option>
            <option value="sum">sum of</option>
            <option value="avg">average of</option>
          </select>
        </label>
        {(form.metric === "sum" || form.metric === "avg") && (
          <label>
            Property
            <input list={PROPERTY_LIST} value={form.property} onChange={(e) => setForm({ ...form, property: e.target.value })} />
          </label>
        )}
        <label>
          By
          <select value={form.interval} onChange={(e) => setForm({ ...form, interval: e.target.value })}>
            <option value="hour">hour</option>
            <option value="day">day</option>
            <option value="week">week</option>
            <option value="month">month</option>
          </select>
        </label>
        <label>
          Over the last
          <select value={form.days} onChange={(e) => setForm({ ...form, days: Number(e.target.value) })}>
            {[7, 30, 90, 365].map((d) => (
              <option key={d} value={d}>
                {d} days
              </option>
            ))}
          </select>
        </label>
        <label>
          Breakdown by
          <input
            list={PROPERTY_LIST}
            placeholder="property"
            value={form.breakdown}
            onChange={(e) => setForm({ ...form, breakdown: e.target.value })}
          />
        </label>
        <label className="check">
          <input
            type="checkbox"
            checked={form.compare}
            onChange={(e) => setForm({ ...form, compare: e.target.checked })}
          />
          Previous period
        </label>
        <label>
          Chart
          <select
            value={form.chart}
            onChange={(e) => setForm({ ...form, chart: e.target.value as "line" | "bar" })}
          >
            <option value="line">lines</option>
            <option value="bar">bars</option>
          </select>
        </label>
        <button type="submit" className="primary" disabled={state.busy}>
          Calculate
        </button>
      </form>
      <div className="card">
        {state.data && (
          <AddToDashboard
            widget={() => widgetOf("trends", `${form.event} (${form.metric}) by ${form.interval}`, body(), form.days)}
          />
        )}
        <Shown state={state} retry={() => void run(body())}>
          {(r) => (
            <>
              {option && <Chart label={`${form.event} by ${form.interval}`} option={option} />}
              <table className="table" aria-label="Totals">
                <thead>
                  <tr>
                    <th>Series</th>
                    <th>Total</th>
                    {r.previous && <th>Previous period</th>}
                  </tr>
                </thead>
                <tbody>
                  {r.series.map((x, i) => (
                    <tr key={i}>
                      <td>{x.breakdown ?? "all"}</td>
                      <td className="num">{count(x.total)}</td>
                      {r.previous && <td className="num">{count(r.previous.series?.[i]?.total)}</td>}
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
        </Shown>
      </div>
    </section>
  );
}

// --- paths ----------------------------------------------------------------------------------

type Paths = Schemas["PathsResult"];

/// Sankey nodes are per depth (the same event at two depths is two nodes; cycles are not
/// allowed in a sankey).
export function pathsSankey(r: Paths, root: string, direction: "next" | "previous"): EChartsOption {
  const name = (label: string, depth: number) => (depth === 0 ? label : `${label} · ${depth}`);
  const nodes = new Set<string>();
  const links = r.edges.map((e) => {
    const from = name(e.from, e.depth - 1);
    const to = name(e.to, e.depth);
    const [source, target] = direction === "next" ? [from, to] : [to, from];
    nodes.add(source);
    nodes.add(target);
    return { source, target, value: e.count };
  });
  nodes.add(root);
  return {
    tooltip: { trigger: "item" },
    series: [
      {
        type: "sankey",
        data: [...nodes].map((n) => ({ name: n })),
        links,
        emphasis: { focus: "adjacency" },
        label: { fontSize: 12 },
      },
    ],
  };
}

export function PathsPage() {
  const [form, setForm] = useState({ event: "Product Added", direction: "next" as "next" | "previous", depth: 3, days: 30 });
  const [state, run] = useQuery<Paths>();
  const body = () => {
    const to = endOfToday();
    return {
      kind: "paths",
      event: { event: form.event },
      direction: form.direction,
      depth: form.depth,
      from: new Date(to.getTime() - form.days * DAY).toISOString(),
      to: to.toISOString(),
      limit: 8,
    };
  };
  return (
    <section aria-labelledby="paths-title">
      <h1 id="paths-title">Paths</h1>
      <form
        className="card row"
        aria-label="Paths query"
        onSubmit={(e) => {
          e.preventDefault();
          void run(body());
        }}
      >
        <label>
          Around
          <input list={EVENT_LIST} value={form.event} onChange={(e) => setForm({ ...form, event: e.target.value })} required />
        </label>
        <label>
          Direction
          <select
            value={form.direction}
            onChange={(e) => setForm({ ...form, direction: e.target.value as "next" | "previous" })}
          >
            <option value="next">what comes next</option>
            <option value="previous">what came before</option>
          </select>
        </label>
        <label>
          Steps
          <input
            type="number"
            min={1}
            max={5}
            value={form.depth}
            onChange={(e) => setForm({ ...form, depth: Number(e.target.value) })}
          />
        </label>
        <button type="submit" className="primary" disabled={state.busy}>
          Calculate
        </button>
      </form>
      <div className="card">
        <Shown state={state} retry={() => void run(body())}>
          {(r) =>
            r.edges.length === 0 ? (
              <Empty>No one did “{form.event}” in this range.</Empty>
            ) : (
              <>
                <p className="hint">
                  {count(r.occurrences)} occurrences of “{form.event}”.
                </p>
                <Chart
                  label={`Paths around ${form.event}`}
                  height={420}
                  option={pathsSankey(r, form.event, form.direction)}
                />
              </>
            )
          }
        </Shown>
      </div>
    </section>
  );
}
