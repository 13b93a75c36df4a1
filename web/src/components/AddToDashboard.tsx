// "Add to dashboard" for an insight (funnel, trend, retention): the query as it was last
// calculated becomes a widget at the bottom of one of the user's dashboards (or of a new one).
import { useState } from "react";
import { Link } from "react-router-dom";
import type { Layout } from "react-grid-layout";
import { api, call } from "../api/client";
import { useSession } from "../auth";
import type { Widget } from "../pages/Dashboards";
import { ErrorState, useLoad } from "./States";

interface Board {
  id: string;
  name: string;
  mine: boolean;
  widgets: Widget[];
  layout: Layout[];
}

/// A widget of `body` (a query as sent): its range is left out, `days` back is kept instead.
export function widgetOf(kind: Widget["kind"], title: string, body: Record<string, unknown>, days: number, id?: string): Widget {
  const query = Object.fromEntries(Object.entries(body).filter(([k]) => k !== "from" && k !== "to"));
  return { id: id ?? `${kind}-${Date.now().toString(36)}`, title, kind, query, days: Math.max(1, Math.round(days)) };
}

/// `layout` with a `w`-by-`h` cell for `id` below everything in it.
export function below(layout: Layout[], id: string, w = 6, h = 5): Layout[] {
  const bottom = layout.reduce((y, l) => Math.max(y, l.y + l.h), 0);
  return [...layout.map(({ i, x, y, w, h }) => ({ i, x, y, w, h })), { i: id, x: 0, y: bottom, w, h }];
}

export function AddToDashboard({ widget }: { widget: () => Widget | null }) {
  const s = useSession();
  const [boards, reload] = useLoad(
    async () =>
      (((await call(() => api.GET("/api/v1/dashboards"))) as { dashboards?: Board[] }).dashboards ?? []).filter(
        (b) => b.mine,
      ),
    [s.tokens.tenant_id],
  );
  const [target, setTarget] = useState("");
  const [added, setAdded] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const mine = boards.state === "done" ? boards.data : [];
  const chosen = mine.find((b) => b.id === target) ?? mine[0];
  async function add() {
    const w = widget();
    if (!w) return;
    setError(null);
    setAdded(null);
    try {
      if (chosen) {
        await call(() =>
          api.PUT("/api/v1/dashboards/{id}", {
            params: { path: { id: chosen.id } },
            body: { widgets: [...chosen.widgets, w], layout: below(chosen.layout, w.id) } as never,
          }),
        );
        setAdded(chosen.name);
      } else {
        await call(() =>
          api.POST("/api/v1/dashboards", {
            body: { name: "My dashboard", widgets: [w], layout: below([], w.id) } as never,
          }),
        );
        setAdded("a new dashboard");
      }
      reload();
    } catch (e) {
      setError(e);
    }
  }
  if (boards.state !== "done") return null;
  return (
    <div className="row add-to-dashboard">
      {mine.length > 1 && (
        <label>
          Dashboard
          <select value={chosen?.id} onChange={(e) => setTarget(e.target.value)}>
            {mine.map((b) => (
              <option key={b.id} value={b.id}>
                {b.name}
              </option>
            ))}
          </select>
        </label>
      )}
      <button type="button" onClick={() => void add()}>
        {chosen ? `Add to ${mine.length > 1 ? "dashboard" : chosen.name}` : "Add to a new dashboard"}
      </button>
      {added && (
        <p role="status">
          Added to {added}. <Link to="/dashboards">Open dashboards</Link>
        </p>
      )}
      {error != null && <ErrorState error={error} />}
    </div>
  );
}
