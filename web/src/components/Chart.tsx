// A chart drawn by Apache ECharts, loaded on first use (its own chunk).
import { useEffect, useRef } from "react";
import type { EChartsOption } from "echarts";

type Echarts = typeof import("./echarts");
let loading: Promise<Echarts> | null = null;

function load(): Promise<Echarts> {
  loading ??= import("./echarts");
  return loading;
}

export function Chart({
  option,
  height = 280,
  label,
  onClick,
}: {
  option: EChartsOption;
  height?: number;
  /// What the chart shows, for screen readers.
  label: string;
  onClick?: (params: { dataIndex: number; seriesIndex?: number; name: string }) => void;
}) {
  const el = useRef<HTMLDivElement>(null);
  const chart = useRef<ReturnType<Echarts["init"]> | null>(null);
  useEffect(() => {
    let live = true;
    load().then((e) => {
      if (!live || !el.current) return;
      chart.current ??= e.init(el.current);
      chart.current.setOption(option, true);
      chart.current.off("click");
      if (onClick) chart.current.on("click", (p) => onClick(p as never));
    });
    return () => {
      live = false;
    };
  }, [option, onClick]);
  useEffect(() => {
    const ro = new ResizeObserver(() => chart.current?.resize());
    if (el.current) ro.observe(el.current);
    return () => {
      ro.disconnect();
      chart.current?.dispose();
      chart.current = null;
    };
  }, []);
  return <div ref={el} className="chart" style={{ height }} role="img" aria-label={label} />;
}
