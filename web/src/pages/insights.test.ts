import { pathsSankey, retentionHeatmap, trendsChart } from "./Insights";

const l = { currency: "USD", timeZone: "UTC", locale: "en-US" };

test("a retention answer becomes a heat map of cohorts by periods later", () => {
  const o = retentionHeatmap(
    {
      kind: "retention",
      log_offset: 1,
      cohorts: [
        { start: "2026-03-02T00:00:00Z", size: 10, counts: [10, 4], percentages: [1, 0.4] },
        { start: "2026-03-09T00:00:00Z", size: 5, counts: [5], percentages: [1] },
      ],
    },
    l,
  );
  const series = o.series as { data: number[][] }[];
  expect(series[0].data).toEqual([
    [0, 0, 100],
    [1, 0, 40],
    [0, 1, 100],
  ]);
  expect((o.yAxis as { data: string[] }).data).toEqual(["Mar 2 (10)", "Mar 9 (5)"]);
});

test("trends draw each breakdown and the previous period dashed", () => {
  const o = trendsChart(
    {
      kind: "trends",
      log_offset: 1,
      buckets: ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"],
      series: [{ breakdown: null, values: [1, 2], total: 3 }],
      previous: { buckets: [], series: [{ breakdown: null, values: [0, 1], total: 1 }] },
    },
    "bar",
    l,
  );
  const series = o.series as { name: string; type: string; lineStyle?: { type: string } }[];
  expect(series.map((s) => [s.name, s.type])).toEqual([
    ["this period", "bar"],
    ["previous period", "line"],
  ]);
  expect(series[1].lineStyle?.type).toBe("dashed");
});

test("paths become a sankey with one node per event and depth (no cycles)", () => {
  const o = pathsSankey(
    {
      kind: "paths",
      log_offset: 1,
      occurrences: 3,
      edges: [
        { depth: 1, from: "Product Added", to: "Checkout Started", count: 2 },
        { depth: 2, from: "Checkout Started", to: "Product Added", count: 1 },
      ],
    },
    "Product Added",
    "next",
  );
  const s = (o.series as { data: { name: string }[]; links: unknown[] }[])[0];
  expect(s.links).toEqual([
    { source: "Product Added", target: "Checkout Started · 1", value: 2 },
    { source: "Checkout Started · 1", target: "Product Added · 2", value: 1 },
  ]);
  expect(s.data.map((d) => d.name).sort()).toEqual(["Checkout Started · 1", "Product Added", "Product Added · 2"]);
});

test("an insight becomes a widget without its range, placed below the dashboard's widgets", async () => {
  const { below, widgetOf } = await import("../components/AddToDashboard");
  const w = widgetOf("funnel", "Checkout", { kind: "funnel", from: "a", to: "b", steps: [{ event: "X" }] }, 14, "f1");
  expect(w).toEqual({ id: "f1", title: "Checkout", kind: "funnel", query: { kind: "funnel", steps: [{ event: "X" }] }, days: 14 });
  const layout = [
    { i: "a", x: 0, y: 0, w: 6, h: 5 },
    { i: "b", x: 6, y: 2, w: 6, h: 7 },
  ];
  expect(below(layout, "f1").at(-1)).toEqual({ i: "f1", x: 0, y: 9, w: 6, h: 5 });
  expect(below([], "f1")).toEqual([{ i: "f1", x: 0, y: 0, w: 6, h: 5 }]);
});
