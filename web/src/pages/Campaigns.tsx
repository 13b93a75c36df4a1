// Messages and campaigns: per workflow, journeys, conversion and its uplift over the
// holdout group, and what its messages did (delivered, opened, clicked, unsubscribed);
// the dead letters.
import { api, call, type Schemas } from "../api/client";
import { useAuth, useSession } from "../auth";
import { DeadLetters } from "../components/DeadLetters";
import { Empty, Loaded, useLoad } from "../components/States";
import { count, percent } from "../format";

interface Metrics {
  journeys?: { entered?: number; converted?: number; conversion_rate?: number | null };
  holdout?: { entered?: number; conversion_rate?: number | null };
  uplift?: number | null;
  engagement?: Record<string, number>;
  steps?: Record<string, { sent?: number; blocked?: number; failed?: number }>;
}

/// The messages a workflow's steps sent, blocked and failed, summed.
export function messageTotals(m: Metrics) {
  const steps = Object.values(m.steps ?? {});
  const sum = (k: "sent" | "blocked" | "failed") => steps.reduce((n, s) => n + (s[k] ?? 0), 0);
  return { sent: sum("sent"), blocked: sum("blocked"), failed: sum("failed") };
}

export default function Campaigns() {
  const s = useSession();
  const { can } = useAuth();
  const [load, reload] = useLoad(async () => {
    const list = (await call(() => api.GET("/api/v1/workflows"))) as { workflows?: Schemas["Workflow"][] };
    const workflows = list.workflows ?? [];
    const metrics = await Promise.all(
      workflows.map(
        (w) =>
          call(() =>
            api.GET("/api/v1/workflows/{id}/metrics", { params: { path: { id: String(w.id) } } }),
          ) as Promise<Metrics>,
      ),
    );
    return workflows.map((w, i) => ({ w, m: metrics[i] }));
  }, [s.tokens.tenant_id]);
  return (
    <section aria-labelledby="campaigns-title">
      <h1 id="campaigns-title">Messages &amp; campaigns</h1>
      <div className="card">
        <Loaded load={load} reload={reload}>
          {(rows) =>
            rows.length === 0 ? (
              <Empty>No workflows yet.</Empty>
            ) : (
              <table className="table" aria-label="Campaigns">
                <thead>
                  <tr>
                    <th>Workflow</th>
                    <th>Status</th>
                    <th>Entered</th>
                    <th>Sent</th>
                    <th>Delivered</th>
                    <th>Opened</th>
                    <th>Clicked</th>
                    <th>Converted</th>
                    <th>Uplift vs holdout</th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map(({ w, m }) => {
                    const t = messageTotals(m);
                    const e = m.engagement ?? {};
                    const wf = w as { id?: string; name?: string; status?: string };
                    return (
                      <tr key={wf.id}>
                        <td>{wf.name ?? wf.id}</td>
                        <td>{wf.status}</td>
                        <td className="num">{count(m.journeys?.entered)}</td>
                        <td className="num">{count(t.sent)}</td>
                        <td className="num">{count(e.delivered)}</td>
                        <td className="num">{count(e.opened)}</td>
                        <td className="num">{count(e.clicked)}</td>
                        <td className="num">
                          {count(m.journeys?.converted)} ({percent(m.journeys?.conversion_rate)})
                        </td>
                        <td className="num">{m.uplift == null ? "—" : percent(m.uplift)}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            )
          }
        </Loaded>
      </div>
      {can("pii.view") && <DeadLetters />}
    </section>
  );
}
