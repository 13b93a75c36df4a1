// The parts of ECharts the dashboard draws with (tree-shaken: lines, bars, funnels, heat
// maps, sankey diagrams).
import * as echarts from "echarts/core";
import { BarChart, FunnelChart, HeatmapChart, LineChart, SankeyChart } from "echarts/charts";
import {
  GridComponent,
  LegendComponent,
  TooltipComponent,
  VisualMapComponent,
  DatasetComponent,
} from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([
  BarChart,
  FunnelChart,
  HeatmapChart,
  LineChart,
  SankeyChart,
  GridComponent,
  LegendComponent,
  TooltipComponent,
  VisualMapComponent,
  DatasetComponent,
  CanvasRenderer,
]);

export const init = (el: HTMLElement) => echarts.init(el, undefined, { renderer: "canvas" });
