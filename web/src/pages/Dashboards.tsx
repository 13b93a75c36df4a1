// Custom dashboards: widgets (KPIs, trends, funnels, retention) dragged and resized on a
// grid (react-grid-layout), saved per user, and shareable within the tenant.
import { useCallback, useEffect, useMemo, useState } from "react";
import GridLayout, { WidthProvider, type Layout } from "react-grid-layout";
import "react-grid-layout/css/styles.css";
import type { EChartsOption } from "echarts";
import { api, call, query, type FunnelResult, type Schemas } from "../api/client";
import { useSession } from "../auth";
import { Chart } from "../components/Chart";
import { Empty, ErrorState, Loaded, Loading, useLoad } from "../components/States";
import { DAY, count, endOfToday, money, percent, type Locale } from "../format";
import { retentionHeatmap, trendsChart } from "./Insights";

const Grid = WidthProvider(GridLayout);

export interface Widget {
  id: string;
  title: string;
  kind: "kpi" | "trends" | "funnel" | "retention";
  /// The query, without its range: `days` back from the end of today is added when shown.
  query: Record<string, unknown>;
  days?: number;
}

interface Board {
  id: string;
  name: string;
  shared: boolean;
  mine: boolean;
  widgets: Widget[];
  layout: Layout[];
}

/// The widget's query over its last `days` (retention: that many periods back).
export function ranged(w: Widget, now = new Date()): Record<string, unknown> {
  const to = endOfToday(now);
  const days = w.days ?? 30;
  const from = new Date(to.getTime() - days * DAY);
  if (w.kind === "retention") return { ...w.query, from: from.toISOString() };
  return { ...w.query, from: from.toISOString(), to: to.toISOString() };
}

/// What a new dashboard starts with.
export const STARTER: { widgets: Widget[]; layout: Layout[] } = {
  widgets: [
    { id: "orders", title: "Orders, last 30 days", kind: "kpi", query: { kind: "commerce", interval: "day" } },
    {
      id: "revenue",
      title: "Revenue by day",
      kind: "trends",
      query: { kind: "trends", event: { event: "Order Completed" }, metric: { kind: "sum", property: "revenue" }, interval: "day" },
    },
    {
      id: "checkout",
      title: "Checkout funnel",
      kind: "funnel",
      query: {
        kind: "funnel",
        window_seconds: 604800,
        order: "ordered",
        steps: [{ event: "Product Viewed" }, { event: "Product Added" }, { event: "Order Completed" }],
      },
    },
    {
      id: "retention",
      title: "Weekly retention",
      kind: "retention",
      days: 56,
      query: { kind: "retention", period: "week", periods: 8, start_event: { event: "Product Viewed" }, return_event: { event: "Order Completed" } },
    },
  ],
  layout: [
    { i: "orders", x: 0, y: 0, w: 3, h: 3 },
    { i: "revenue", x: 3, y: 0, w: 9, h: 5 },
    { i: "checkout", x: 0, y: 5, w: 6, h: 5 },
    { i: "retention", x: 6, y: 5, w: 6, h: 5 },
  ],
};

function funnelChart(r: FunnelResult): EChartsOption {
  return {
    tooltip: { trigger: "item" },
    series: [
      {
        type: "funnel",
        sort: "none",
        label: { formatter: "{b}: {c}" },
        data: r.steps.map((s) => ({ name: s.event, value: s.count })),
      },
    ],
  };
}

function WidgetView({ w, locale }: { w: Widget; locale: Locale }) {
  const [load, reload] = useLoad(() => query<unknown>(ranged(w)), [JSON.stringify(w)]);
  const option = useMemo(() => {
    if (load.state !== "done") return null;
    if (w.kind === "trends") return trendsChart(load.data as Schemas["TrendsResult"], "line", locale);
    if (w.kind === "funnel") return funnelChart(load.data as FunnelResult);
    if (w.kind === "retention") return retentionHeatmap(load.data as Schemas["RetentionResult"], locale);
    return null;
  }, [load, w.kind, locale]);
  if (load.state === "loading") return <Loading />;
  if (load.state === "error") return <ErrorState error={load.error} retry={reload} />;
  if (w.kind === "kpi") {
    const t = (load.data as Schemas["CommerceResult"]).totals;
    return (
      <div className="kpi-widget">
        <div className="kpi-value">{count(t.orders)}</div>
        <div className="hint">
          {money(t.revenue, locale)} · {percent(t.conversion_rate)} conversion
        </div>
      </div>
    );
  }
  return option ? <Chart label={w.title} option={option} height={999} /> : <Empty>No data.</Empty>;
}

export default function Dashboards() {
  const s = useSession();
  const [list, reload] = useLoad(
    () => call(() => api.GET("/api/v1/dashboards")) as Promise<{ dashboards?: Board[] }>,
    [s.tokens.tenant_id],
  );
  const [current, setCurrent] = useState<Board | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [saving, setSaving] = useState(false);

  useEffect(() => {
    if (list.state === "done" && !current) setCurrent(list.data.dashboards?.[0] ?? null);
  }, [list, current]);

  async function create() {
    setError(null);
    try {
      const d = (await call(() =>
        api.POST("/api/v1/dashboards", { body: { name: "My dashboard", ...STARTER } as never }),
      )) as Board;
      setCurrent(d);
      reload();
    } catch (e) {
      setError(e);
    }
  }

  const save = useCallback(
    async (change: Partial<Board>) => {
      if (!current?.mine) return;
      setSaving(true);
      setError(null);
      try {
        const d = (await call(() =>
          api.PUT("/api/v1/dashboards/{id}", { params: { path: { id: current.id } }, body: change as never }),
        )) as Board;
        setCurrent(d);
      } catch (e) {
        setError(e);
      } finally {
        setSaving(false);
      }
    },
    [current],
  );

  // Only what the grid is about (react-grid-layout adds its own keys).
  const onLayout = (layout: Layout[]) => {
    const clean = layout.map(({ i, x, y, w, h }) => ({ i, x, y, w, h }));
    const before = JSON.stringify(current?.layout.map(({ i, x, y, w, h }) => ({ i, x, y, w, h })));
    if (JSON.stringify(clean) !== before) void save({ layout: clean });
  };

  return (
    <section aria-labelledby="dashboards-title">
      <h1 id="dashboards-title">Dashboards</h1>
      <Loaded load={list} reload={reload}>
        {(l) => (
          <div className="row">
            <label>
              Dashboard
              <select
                value={current?.id ?? ""}
                onChange={(e) => setCurrent((l.dashboards ?? []).find((d) => d.id === e.target.value) ?? null)}
              >
                {(l.dashboards ?? []).map((d) => (
                  <option key={d.id} value={d.id}>
                    {d.name}
                    {d.mine ? "" : " (shared with you)"}
                  </option>
                ))}
              </select>
            </label>
            <button type="button" onClick={() => void create()}>
              New dashboard
            </button>
            {current?.mine && (
              <label className="check">
                <input type="checkbox" checked={current.shared} onChange={(e) => void save({ shared: e.target.checked })} />
                Shared with the team
              </label>
            )}
            <span className="hint" role="status">
              {saving ? "Saving…" : current?.mine ? "Drag or resize widgets; changes are saved." : current ? "Read only: shared by a teammate." : ""}
            </span>
          </div>
        )}
      </Loaded>
      {error != null && <ErrorState error={error} />}
      {list.state === "done" && !current && <Empty>No dashboards yet: make one with New dashboard.</Empty>}
      {current && (
        <Grid
          className="grid"
          cols={12}
          rowHeight={60}
          layout={current.layout}
          isDraggable={current.mine}
          isResizable={current.mine}
          draggableHandle=".widget-title"
          onDragStop={onLayout}
          onResizeStop={onLayout}
        >
          {current.widgets.map((w) => (
            <div key={w.id} className="widget" data-testid={`widget-${w.id}`}>
              <h2 className="widget-title">{w.title}</h2>
              <div className="widget-body">
                <WidgetView w={w} locale={s.locale} />
              </div>
            </div>
          ))}
        </Grid>
      )}
    </section>
  );
}
