// The dead letters: messages given up on (no provider, no address, every retry failed),
// each with why; a workflow's own, or all of the tenant's.
import { api, call, type Schemas } from "../api/client";
import { useSession } from "../auth";
import { dateTime } from "../format";
import { Empty, Loaded, useLoad } from "./States";

export function DeadLetters({ workflow }: { workflow?: string }) {
  const s = useSession();
  const [load, reload] = useLoad(async () => {
    const r = (await call(() =>
      api.GET("/api/v1/messages", { params: { query: { status: "dead", limit: 1000 } } }),
    )) as { messages?: Schemas["OutboxMessage"][] };
    return (r.messages ?? []).filter((m) => workflow == null || m.workflow === workflow);
  }, [s.tokens.tenant_id, workflow]);
  return (
    <section aria-label="Dead letters" className="card">
      <h2>Dead letters</h2>
      <Loaded load={load} reload={reload}>
        {(list) =>
          list.length === 0 ? (
            <Empty>No dead letters: every message was sent, held or blocked by the policy.</Empty>
          ) : (
            <table className="table" aria-label="Dead letters">
              <thead>
                <tr>
                  <th>When</th>
                  {workflow == null && <th>Workflow</th>}
                  <th>Person</th>
                  <th>Channel</th>
                  <th className="num">Attempts</th>
                  <th>Why</th>
                </tr>
              </thead>
              <tbody>
                {list.slice(0, 100).map((m) => (
                  <tr key={m.key}>
                    <td>{dateTime(m.updated_at, s.locale)}</td>
                    {workflow == null && <td>{m.workflow}</td>}
                    <td>{m.person}</td>
                    <td>{m.channel}</td>
                    <td className="num">{m.attempts}</td>
                    <td>{m.reason}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </section>
  );
}
