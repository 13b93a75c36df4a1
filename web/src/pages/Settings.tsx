// Settings: members and roles, and the audit log (more to come: keys, channels, policies).
import { api, call } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Empty, Loaded, useLoad } from "../components/States";
import { dateTime } from "../format";

interface Member {
  user_id?: string;
  email?: string;
  name?: string;
  role?: string;
}
interface Audit {
  entries?: { at?: string; action?: string; actor?: string; target?: string | null }[];
}

export default function Settings() {
  const s = useSession();
  const { can } = useAuth();
  const [members, reload] = useLoad(
    () => call(() => api.GET("/api/v1/members")) as Promise<{ members?: Member[] }>,
    [s.tokens.tenant_id],
  );
  const [audit] = useLoad(
    () =>
      can("audit.read")
        ? (call(() => api.GET("/api/v1/audit", { params: { query: { limit: 20 } } } as never)) as Promise<Audit>)
        : Promise.resolve({ entries: [] }),
    [s.tokens.tenant_id],
  );
  return (
    <section aria-labelledby="settings-title">
      <h1 id="settings-title">Settings</h1>
      <div className="card">
        <h2>Members</h2>
        <Loaded load={members} reload={reload}>
          {(m) =>
            (m.members ?? []).length === 0 ? (
              <Empty>No members.</Empty>
            ) : (
              <table className="table" aria-label="Members">
                <thead>
                  <tr>
                    <th>Email</th>
                    <th>Name</th>
                    <th>Role</th>
                  </tr>
                </thead>
                <tbody>
                  {(m.members ?? []).map((x) => (
                    <tr key={x.user_id}>
                      <td>{x.email}</td>
                      <td>{x.name}</td>
                      <td>{x.role}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Loaded>
      </div>
      {can("audit.read") && (
        <div className="card">
          <h2>Audit log</h2>
          <Loaded load={audit}>
            {(a) => (
              <ul className="audit">
                {(a.entries ?? []).map((e, i) => (
                  <li key={i}>
                    <time>{dateTime(e.at, s.locale)}</time> {e.action} {e.target ?? ""}
                  </li>
                ))}
              </ul>
            )}
          </Loaded>
        </div>
      )}
    </section>
  );
}
