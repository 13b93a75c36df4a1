// Settings for messaging and data: channels and their credentials, the delivery policy
// (frequency cap, quiet hours, opt-in channels) and data retention, and a person's data
// export and erasure (after typing their id to confirm).
import { useState } from "react";
import { api, call, type Schemas } from "../api/client";
import { useSession } from "../auth";
import { Empty, ErrorState, Loaded, useLoad } from "../components/States";
import { count } from "../format";

type ChannelConfig = Schemas["ChannelConfig"];
type Policy = Schemas["DeliveryPolicy"];
type Tenant = Schemas["Tenant"];

interface Field {
  name: string;
  label: string;
  /// A credential: typed blind and never shown again.
  secret?: boolean;
  number?: boolean;
  choices?: string[];
  long?: boolean;
  optional?: boolean;
}

/// Each channel's provider and the settings it takes (credentials marked secret).
export const PROVIDERS: Record<string, { provider: string; fields: Field[] }> = {
  email: {
    provider: "smtp",
    fields: [
      { name: "host", label: "SMTP host" },
      { name: "port", label: "Port", number: true },
      { name: "security", label: "Security", choices: ["starttls", "tls", "none"] },
      { name: "username", label: "User name", optional: true },
      { name: "password", label: "Password", secret: true, optional: true },
      { name: "from", label: "From (Shop <hello@shop.example>)" },
    ],
  },
  sms: {
    provider: "twilio",
    fields: [
      { name: "account_sid", label: "Account SID" },
      { name: "auth_token", label: "Auth token", secret: true },
      { name: "from", label: "From number", optional: true },
      { name: "messaging_service_sid", label: "Messaging service SID", optional: true },
      { name: "status_callback", label: "Status callback URL", optional: true },
    ],
  },
  whatsapp: {
    provider: "whatsapp-cloud",
    fields: [
      { name: "phone_number_id", label: "Phone number id" },
      { name: "access_token", label: "Access token", secret: true },
      { name: "app_secret", label: "App secret", secret: true, optional: true },
      { name: "verify_token", label: "Webhook verify token", secret: true, optional: true },
    ],
  },
  push: {
    provider: "fcm",
    fields: [
      { name: "project_id", label: "Project id" },
      { name: "client_email", label: "Service account email" },
      { name: "private_key", label: "Private key (PEM)", secret: true, long: true },
    ],
  },
  webhook: {
    provider: "webhook",
    fields: [{ name: "secret", label: "Signing secret (HMAC, 20+ characters)", secret: true }],
  },
};

/// The settings a form gives: empty optional fields left out, ports as numbers.
export function channelSettings(channel: string, values: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of PROVIDERS[channel].fields) {
    const v = (values[f.name] ?? (f.choices ? f.choices[0] : "")).trim();
    if (v === "") continue;
    out[f.name] = f.number ? Number(v) : v;
  }
  return out;
}

export function Channels() {
  const s = useSession();
  const [list, reload] = useLoad(
    () => call(() => api.GET("/api/v1/channels")) as Promise<{ channels?: Record<string, ChannelConfig> }>,
    [s.tokens.tenant_id],
  );
  const [channel, setChannel] = useState("email");
  const [values, setValues] = useState<Record<string, string>>({});
  const [perSecond, setPerSecond] = useState("");
  const [confirm, setConfirm] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  async function save() {
    setError(null);
    setSaved(null);
    try {
      const body: Record<string, unknown> = {
        provider: PROVIDERS[channel].provider,
        settings: channelSettings(channel, values),
      };
      if (perSecond.trim() !== "") body.per_second = Number(perSecond);
      await call(() =>
        api.PUT("/api/v1/channels/{channel}", {
          params: { path: { channel: channel as never } },
          body: body as never,
        }),
      );
      setValues({});
      setSaved(channel);
      reload();
    } catch (e) {
      setError(e);
    }
  }
  async function remove(name: string) {
    setError(null);
    setConfirm(null);
    try {
      await call(() => api.DELETE("/api/v1/channels/{channel}", { params: { path: { channel: name as never } } }));
      reload();
    } catch (e) {
      setError(e);
    }
  }
  return (
    <div className="card">
      <h2>Channels</h2>
      <Loaded load={list} reload={reload}>
        {(l) => {
          const entries = Object.entries(l.channels ?? {});
          return entries.length === 0 ? (
            <Empty>No channel is configured: messages wait in the dead letters until one is.</Empty>
          ) : (
            <table className="table" aria-label="Channels">
              <thead>
                <tr>
                  <th>Channel</th>
                  <th>Provider</th>
                  <th>Settings</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {entries.map(([name, c]) => (
                  <tr key={name} data-testid={`channel-${name}`}>
                    <td>{name}</td>
                    <td>{c.provider}</td>
                    <td className="settings-list">
                      {Object.entries(c.settings ?? {})
                        .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
                        .join(" · ")}
                    </td>
                    <td>
                      {confirm === name ? (
                        <span role="alertdialog" aria-label="Confirm removing">
                          Remove {name}? Its messages stop until it is configured again.{" "}
                          <button type="button" className="danger" onClick={() => void remove(name)}>
                            Remove
                          </button>{" "}
                          <button type="button" onClick={() => setConfirm(null)}>
                            Keep
                          </button>
                        </span>
                      ) : (
                        <button type="button" onClick={() => setConfirm(name)}>
                          Remove…
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          );
        }}
      </Loaded>
      <form
        aria-label="Configure a channel"
        onSubmit={(e) => {
          e.preventDefault();
          void save();
        }}
      >
        <h3>Configure a channel</h3>
        <div className="row">
          <label>
            Channel
            <select
              value={channel}
              onChange={(e) => {
                setChannel(e.target.value);
                setValues({});
              }}
            >
              {Object.keys(PROVIDERS).map((c) => (
                <option key={c}>{c}</option>
              ))}
            </select>
          </label>
          <label>
            Provider
            <input value={PROVIDERS[channel].provider} readOnly />
          </label>
          <label>
            Messages a second
            <input type="number" min={1} value={perSecond} onChange={(e) => setPerSecond(e.target.value)} />
          </label>
        </div>
        <div className="row">
          {PROVIDERS[channel].fields.map((f) => (
            <label key={f.name} className={f.long ? "grow" : undefined}>
              {f.label}
              {f.choices ? (
                <select
                  value={values[f.name] ?? f.choices[0]}
                  onChange={(e) => setValues({ ...values, [f.name]: e.target.value })}
                >
                  {f.choices.map((c) => (
                    <option key={c}>{c}</option>
                  ))}
                </select>
              ) : f.long ? (
                <textarea
                  rows={3}
                  value={values[f.name] ?? ""}
                  required={!f.optional}
                  onChange={(e) => setValues({ ...values, [f.name]: e.target.value })}
                />
              ) : (
                <input
                  type={f.secret ? "password" : f.number ? "number" : "text"}
                  autoComplete={f.secret ? "new-password" : "off"}
                  value={values[f.name] ?? ""}
                  required={!f.optional}
                  onChange={(e) => setValues({ ...values, [f.name]: e.target.value })}
                />
              )}
            </label>
          ))}
        </div>
        <p className="muted">Credentials are stored sealed with the tenant's key and never shown again.</p>
        <button type="submit">Save {channel}</button>
        {saved != null && <p role="status">{saved} is configured.</p>}
      </form>
      {error != null && <ErrorState error={error} />}
    </div>
  );
}

const HOURS = Array.from({ length: 24 }, (_, h) => h);
const OPT_IN = ["email", "sms", "push"];

/// The policy a form gives (`null`: the node's).
export function policyOf(form: PolicyForm): Policy | null {
  if (form.node) return null;
  return {
    frequency_cap: form.cap.trim() === "" ? null : Number(form.cap),
    quiet_hours: form.quiet ? { start: form.start, end: form.end } : null,
    opt_in: form.optIn as Policy["opt_in"],
  };
}

export interface PolicyForm {
  node: boolean;
  cap: string;
  quiet: boolean;
  start: number;
  end: number;
  optIn: string[];
}

function formOf(own: Policy | null | undefined, node: Policy | null | undefined): PolicyForm {
  const p = own ?? node;
  return {
    node: own == null,
    cap: p?.frequency_cap == null ? "" : String(p.frequency_cap),
    quiet: p?.quiet_hours != null,
    start: p?.quiet_hours?.start ?? 21,
    end: p?.quiet_hours?.end ?? 8,
    optIn: [...(p?.opt_in ?? [])],
  };
}

export function Policies() {
  const s = useSession();
  const [tenant, reload] = useLoad(
    () => call(() => api.GET("/api/v1/tenant")) as Promise<Tenant>,
    [s.tokens.tenant_id],
  );
  // Kept here: the editor is made again from the tenant as saved.
  const [done, setDone] = useState(false);
  return (
    <div className="card">
      <h2>Delivery policy and retention</h2>
      <Loaded load={tenant} reload={reload}>
        {(t) => (
          <PolicyEditor
            key={JSON.stringify(t)}
            tenant={t}
            saving={() => setDone(false)}
            saved={() => {
              setDone(true);
              reload();
            }}
          />
        )}
      </Loaded>
      {done && <p role="status">Saved.</p>}
    </div>
  );
}

function PolicyEditor({ tenant, saving, saved }: { tenant: Tenant; saving: () => void; saved: () => void }) {
  const [form, setForm] = useState(() => formOf(tenant.delivery_policy, tenant.node_delivery_policy));
  const [retention, setRetention] = useState(tenant.retention_days == null ? "" : String(tenant.retention_days));
  const [error, setError] = useState<unknown>(null);
  const set = (f: Partial<PolicyForm>) => setForm({ ...form, ...f });
  async function save() {
    setError(null);
    saving();
    try {
      await call(() =>
        api.PATCH("/api/v1/tenant", {
          body: {
            delivery_policy: policyOf(form),
            retention_days: retention.trim() === "" ? null : Number(retention),
          } as never,
        }),
      );
      saved();
    } catch (e) {
      setError(e);
    }
  }
  const off = form.node;
  return (
    <form
      aria-label="Delivery policy"
      onSubmit={(e) => {
        e.preventDefault();
        void save();
      }}
    >
      <p className="muted">
        Checked before every marketing message (receipts and other transactional messages skip caps, quiet hours
        and opt-ins; an opt-out always counts).
      </p>
      <div className="row">
        <label className="check">
          <input type="checkbox" checked={form.node} onChange={(e) => set({ node: e.target.checked })} />
          Use the server's defaults
        </label>
      </div>
      <fieldset disabled={off}>
        <div className="row">
          <label>
            Frequency cap (messages a day per person and channel; empty: none)
            <input type="number" min={1} max={1000} value={form.cap} onChange={(e) => set({ cap: e.target.value })} />
          </label>
          <label className="check">
            <input type="checkbox" checked={form.quiet} onChange={(e) => set({ quiet: e.target.checked })} />
            Quiet hours
          </label>
          <label>
            From
            <select
              value={form.start}
              disabled={!form.quiet}
              onChange={(e) => set({ start: Number(e.target.value) })}
            >
              {HOURS.map((h) => (
                <option key={h} value={h}>
                  {String(h).padStart(2, "0")}:00
                </option>
              ))}
            </select>
          </label>
          <label>
            To
            <select value={form.end} disabled={!form.quiet} onChange={(e) => set({ end: Number(e.target.value) })}>
              {HOURS.map((h) => (
                <option key={h} value={h}>
                  {String(h).padStart(2, "0")}:00
                </option>
              ))}
            </select>
          </label>
        </div>
        <div className="row" role="group" aria-label="Marketing needs an opt-in on">
          <span className="muted">Marketing needs the person's opt-in on:</span>
          {OPT_IN.map((c) => (
            <label key={c} className="check">
              <input
                type="checkbox"
                checked={form.optIn.includes(c)}
                onChange={(e) =>
                  set({ optIn: e.target.checked ? [...form.optIn, c] : form.optIn.filter((x) => x !== c) })
                }
              />
              {c}
            </label>
          ))}
          <span className="muted">(WhatsApp always needs one.)</span>
        </div>
      </fieldset>
      <div className="row">
        <label>
          Keep events for (days; empty: for ever)
          <input type="number" min={1} value={retention} onChange={(e) => setRetention(e.target.value)} />
        </label>
        <button type="submit">Save policy</button>
      </div>
      {error != null && <ErrorState error={error} />}
    </form>
  );
}

interface Erased {
  erased?: string;
  identities?: string[];
  keys_destroyed?: number;
  journeys_erased?: number;
  messages_erased?: number;
  warning?: string;
}

/// Saves `data` as a JSON file named `name`.
function download(name: string, data: unknown) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function PersonData({ canExport, canErase }: { canExport: boolean; canErase: boolean }) {
  const s = useSession();
  const [id, setId] = useState("");
  const [anonymous, setAnonymous] = useState(false);
  const [typed, setTyped] = useState("");
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [erased, setErased] = useState<Erased | null>(null);
  const [exported, setExported] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);
  const person = id.trim();
  function reset() {
    setConfirming(false);
    setErased(null);
    setExported(null);
  }
  async function exportIt() {
    setError(null);
    setBusy(true);
    try {
      const data = (await call(() =>
        api.GET("/api/v1/people/{id}/export", { params: { path: { id: person }, query: { anonymous } } }),
      )) as { events?: unknown[] };
      download(`livora-export-${person.replace(/[^\w.-]+/g, "_")}.json`, data);
      setExported(data.events?.length ?? 0);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  async function erase() {
    setError(null);
    setBusy(true);
    try {
      setErased((await call(() => api.DELETE("/api/v1/people/{id}", { params: { path: { id: person }, query: { anonymous } } }))) as Erased);
      setConfirming(false);
      setTyped("");
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  return (
    <section className="card" aria-label="A person's data">
      <h2>A person's data</h2>
      <p className="muted">Export everything held about a person (GDPR art. 15 and 20), or erase it for good (art. 17).</p>
      <div className="row">
        <label>
          Id is
          <select
            value={anonymous ? "anonymous" : "user"}
            onChange={(e) => {
              setAnonymous(e.target.value === "anonymous");
              reset();
            }}
          >
            <option value="user">a user id</option>
            <option value="anonymous">an anonymous id</option>
          </select>
        </label>
        <label className="grow">
          Id
          <input
            value={id}
            onChange={(e) => {
              setId(e.target.value);
              reset();
            }}
          />
        </label>
        {canExport && (
          <button type="button" disabled={!person || busy} onClick={() => void exportIt()}>
            Export
          </button>
        )}
        {canErase && (
          <button type="button" className="danger" disabled={!person || busy} onClick={() => setConfirming(true)}>
            Erase…
          </button>
        )}
      </div>
      {confirming && (
        <div role="alertdialog" aria-label="Confirm erasing" className="confirm">
          <p>
            Erasing <strong>{person}</strong> destroys their personal data in every event, message and journey. It
            cannot be undone. Type the id to confirm.
          </p>
          <div className="row">
            <label className="grow">
              Type {person}
              <input value={typed} onChange={(e) => setTyped(e.target.value)} aria-label="Type the id to confirm" />
            </label>
            <button type="button" className="danger" disabled={typed !== person || busy} onClick={() => void erase()}>
              Erase for good
            </button>
            <button type="button" onClick={() => setConfirming(false)}>
              Cancel
            </button>
          </div>
        </div>
      )}
      {exported != null && <p role="status">Exported {count(exported, s.locale)} events.</p>}
      {erased && (
        <p role="status" data-testid="erased">
          Erased {erased.erased}: {count(erased.identities?.length ?? 0, s.locale)} identities,{" "}
          {count(erased.keys_destroyed ?? 0, s.locale)} keys destroyed,{" "}
          {count(erased.messages_erased ?? 0, s.locale)} messages scrubbed.
          {erased.warning ? ` ${erased.warning}` : ""}
        </p>
      )}
      {error != null && <ErrorState error={error} />}
    </section>
  );
}
