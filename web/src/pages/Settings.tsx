// Settings: members and roles (invite, change a role, remove after confirming), API keys
// (create, shown once; revoke after confirming), channels, the delivery policy and
// retention, a person's data export and erasure, and the audit log.
import { useState } from "react";
import { api, call } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Empty, ErrorState, Loaded, useLoad } from "../components/States";
import { dateTime } from "../format";
import { Channels, PersonData, Policies } from "./SettingsData";

interface Member {
  user_id?: string;
  email?: string;
  name?: string;
  role?: string;
}
interface Key {
  id?: string;
  kind?: string;
  scopes?: string[];
  prefix?: string;
  created_at?: string;
  revoked_at?: string | null;
}
interface Audit {
  entries?: { at?: string; action?: string; actor?: string; target?: string | null }[];
}

const ROLES = ["owner", "admin", "analyst", "marketer", "sales", "ops", "viewer"];
const KEY_KINDS: { label: string; scopes: string[] }[] = [
  { label: "Write key (ingestion)", scopes: ["ingest"] },
  { label: "Secret key: read", scopes: ["read"] },
  { label: "Secret key: read and admin", scopes: ["read", "admin"] },
];

function Members() {
  const s = useSession();
  const [members, reload] = useLoad(
    () => call(() => api.GET("/api/v1/members")) as Promise<{ members?: Member[] }>,
    [s.tokens.tenant_id],
  );
  const [email, setEmail] = useState("");
  const [role, setRole] = useState("viewer");
  const [invited, setInvited] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  async function remove(userId: string) {
    setError(null);
    setConfirm(null);
    try {
      await call(() => api.DELETE("/api/v1/members/{user_id}", { params: { path: { user_id: userId } } }));
      reload();
    } catch (e) {
      setError(e);
    }
  }
  async function invite() {
    setError(null);
    try {
      const r = (await call(() =>
        api.POST("/api/v1/members", { body: { email, role: role as never } }),
      )) as { invitation_token?: string };
      setInvited(r.invitation_token ?? "");
      setEmail("");
      reload();
    } catch (e) {
      setError(e);
    }
  }
  async function setRoleOf(userId: string, r: string) {
    setError(null);
    try {
      await call(() =>
        api.PATCH("/api/v1/members/{user_id}", { params: { path: { user_id: userId } }, body: { role: r as never } }),
      );
      reload();
    } catch (e) {
      setError(e);
    }
  }
  return (
    <div className="card">
      <h2>Members</h2>
      <form
        className="row"
        aria-label="Invite a member"
        onSubmit={(e) => {
          e.preventDefault();
          void invite();
        }}
      >
        <label className="grow">
          Email
          <input type="email" value={email} onChange={(e) => setEmail(e.target.value)} required />
        </label>
        <label>
          Role
          <select value={role} onChange={(e) => setRole(e.target.value)}>
            {ROLES.map((r) => (
              <option key={r}>{r}</option>
            ))}
          </select>
        </label>
        <button type="submit">Invite</button>
      </form>
      {invited != null && (
        <p role="status">
          Invited. Pass on this invitation token (shown once): <code data-testid="invitation">{invited}</code>
        </p>
      )}
      {error != null && <ErrorState error={error} />}
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
                  <th />
                </tr>
              </thead>
              <tbody>
                {(m.members ?? []).map((x) => (
                  <tr key={x.user_id}>
                    <td>{x.email}</td>
                    <td>{x.name}</td>
                    <td>
                      <select
                        aria-label={`Role of ${x.email}`}
                        value={x.role}
                        onChange={(e) => void setRoleOf(String(x.user_id), e.target.value)}
                      >
                        {ROLES.map((r) => (
                          <option key={r}>{r}</option>
                        ))}
                      </select>
                    </td>
                    <td>
                      {x.user_id === s.userId ? (
                        "you"
                      ) : confirm === x.user_id ? (
                        <span role="alertdialog" aria-label="Confirm removing">
                          Remove {x.email}? Their sessions end now.{" "}
                          <button type="button" className="danger" onClick={() => void remove(String(x.user_id))}>
                            Remove
                          </button>{" "}
                          <button type="button" onClick={() => setConfirm(null)}>
                            Keep
                          </button>
                        </span>
                      ) : (
                        <button type="button" aria-label={`Remove ${x.email}`} onClick={() => setConfirm(x.user_id ?? null)}>
                          Remove…
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </div>
  );
}

function Keys() {
  const s = useSession();
  const [keys, reload] = useLoad(
    () => call(() => api.GET("/api/v1/keys")) as Promise<{ keys?: Key[] }>,
    [s.tokens.tenant_id],
  );
  const [kind, setKind] = useState(0);
  const [secret, setSecret] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  async function create() {
    setError(null);
    try {
      const k = (await call(() =>
        api.POST("/api/v1/keys", { body: { scopes: KEY_KINDS[kind].scopes as never } }),
      )) as { secret?: string };
      setSecret(k.secret ?? "");
      reload();
    } catch (e) {
      setError(e);
    }
  }
  async function revoke(id: string) {
    setError(null);
    setConfirm(null);
    try {
      await call(() => api.DELETE("/api/v1/keys/{key_id}", { params: { path: { key_id: id } } }));
      reload();
    } catch (e) {
      setError(e);
    }
  }
  return (
    <div className="card">
      <h2>API keys</h2>
      <div className="row">
        <label>
          Kind
          <select value={kind} onChange={(e) => setKind(Number(e.target.value))}>
            {KEY_KINDS.map((k, i) => (
              <option key={k.label} value={i}>
                {k.label}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={() => void create()}>
          Create key
        </button>
      </div>
      {secret != null && (
        <p role="status">
          The key (shown once, copy it now): <code data-testid="new-key">{secret}</code>
        </p>
      )}
      {error != null && <ErrorState error={error} />}
      <Loaded load={keys} reload={reload}>
        {(k) => (
          <table className="table" aria-label="API keys">
            <thead>
              <tr>
                <th>Key</th>
                <th>Scopes</th>
                <th>Created</th>
                <th>State</th>
              </tr>
            </thead>
            <tbody>
              {(k.keys ?? []).map((x) => (
                <tr key={x.id} data-testid={`key-${x.prefix}`}>
                  <td>
                    <code>{x.prefix}…</code>
                  </td>
                  <td>{(x.scopes ?? []).join(", ")}</td>
                  <td>{dateTime(x.created_at, s.locale)}</td>
                  <td>
                    {x.revoked_at ? (
                      `revoked ${dateTime(x.revoked_at, s.locale)}`
                    ) : confirm === x.id ? (
                      <span role="alertdialog" aria-label="Confirm revoking">
                        Revoke it? Whatever uses it stops working.{" "}
                        <button type="button" className="danger" onClick={() => void revoke(String(x.id))}>
                          Revoke
                        </button>{" "}
                        <button type="button" onClick={() => setConfirm(null)}>
                          Keep
                        </button>
                      </span>
                    ) : (
                      <button type="button" onClick={() => setConfirm(x.id ?? null)}>
                        Revoke…
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Loaded>
    </div>
  );
}

export default function Settings() {
  const s = useSession();
  const { can } = useAuth();
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
      <Members />
      {can("keys.manage") && <Keys />}
      {can("channels.manage") && <Channels />}
      {can("tenant.manage") && <Policies />}
      {(can("data.export") || can("person.erase")) && (
        <PersonData canExport={can("data.export")} canErase={can("person.erase")} />
      )}
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
