// Workflows: the visual builder on a canvas (React Flow: add nodes from the palette, drag
// them, connect them, edit each in the side panel), save as a new version, enable or pause,
// per-node counts, a backtest over the last 30 days, and failed messages.
import { useCallback, useEffect, useMemo, useState } from "react";
import { Background, Controls, ReactFlow, type Connection, type Edge, type Node, type NodeChange, applyNodeChanges } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { api, call, type Schemas } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Empty, ErrorState, Loaded, useLoad } from "../components/States";
import { DeadLetters } from "../components/DeadLetters";
import { DAY, count, dateTime, endOfToday } from "../format";
import { LABELS, definition, edges, fromDefinition, lineDiff, newStep, unsupported, type Draft, type Step, type StepKind } from "./workflow-model";

interface Metrics {
  journeys?: { entered?: number; converted?: number };
  steps?: Record<string, { entered?: number; waiting?: number; sent?: number; failed?: number }>;
}

const KINDS: StepKind[] = ["wait_for", "delay", "send", "update_trait", "add_tag", "exit"];

function Panel({ draft, selected, set }: { draft: Draft; selected: string | null; set: (d: Draft) => void }) {
  if (selected === "trigger") {
    return (
      <div className="panel" aria-label="Node settings">
        <h2>Trigger</h2>
        <label>
          When a person does
          <input aria-label="Trigger event" value={draft.trigger} onChange={(e) => set({ ...draft, trigger: e.target.value })} />
        </label>
        <label>
          Goal (ends the journey, counts a conversion)
          <input aria-label="Goal event" value={draft.goal} onChange={(e) => set({ ...draft, goal: e.target.value })} />
        </label>
      </div>
    );
  }
  const step = draft.steps.find((s) => s.id === selected);
  if (!step) return <div className="panel hint">Select a node to edit it.</div>;
  const put = (s: Partial<Step>) => set({ ...draft, steps: draft.steps.map((x) => (x.id === step.id ? { ...x, ...s } : x)) });
  return (
    <div className="panel" aria-label="Node settings">
      <h2>{LABELS[step.kind]}</h2>
      <p className="hint">Step {step.id}</p>
      {(step.kind === "delay" || step.kind === "wait_for") && (
        <label>
          {step.kind === "delay" ? "Wait (minutes)" : "Give up after (minutes)"}
          <input
            type="number"
            min={1}
            aria-label="Minutes"
            value={step.minutes}
            onChange={(e) => put({ minutes: Number(e.target.value) })}
          />
        </label>
      )}
      {(step.kind === "wait_for" || step.kind === "update_trait" || step.kind === "add_tag") && (
        <label>
          {step.kind === "wait_for" ? "Event" : step.kind === "add_tag" ? "Tag" : "Trait"}
          <input aria-label="Name" value={step.name} onChange={(e) => put({ name: e.target.value })} />
        </label>
      )}
      {step.kind === "update_trait" && (
        <label>
          Value
          <input aria-label="Value" value={step.value} onChange={(e) => put({ value: e.target.value })} />
        </label>
      )}
      {step.kind === "send" && (
        <>
          <label>
            Channel
            <select aria-label="Channel" value={step.channel} onChange={(e) => put({ channel: e.target.value })}>
              {["email", "sms", "whatsapp", "push"].map((c) => (
                <option key={c}>{c}</option>
              ))}
            </select>
          </label>
          <label>
            Subject
            <input aria-label="Subject" value={step.subject} onChange={(e) => put({ subject: e.target.value })} />
          </label>
          <label>
            Body
            <textarea aria-label="Body" rows={4} value={step.body} onChange={(e) => put({ body: e.target.value })} />
          </label>
        </>
      )}
      <label>
        Then go to
        <select aria-label="Then go to" value={step.next ?? ""} onChange={(e) => put({ next: e.target.value || undefined })}>
          <option value="">the next step</option>
          {draft.steps
            .filter((s) => s.id !== step.id)
            .map((s) => (
              <option key={s.id} value={s.id}>
                {s.id}
              </option>
            ))}
        </select>
      </label>
      <button
        type="button"
        onClick={() =>
          set({
            ...draft,
            steps: draft.steps
              .filter((s) => s.id !== step.id)
              .map((s) => (s.next === step.id ? { ...s, next: undefined } : s)),
          })
        }
      >
        Remove this step
      </button>
    </div>
  );
}

function label(id: string, title: string, detail: string, m?: { entered?: number; waiting?: number; sent?: number; failed?: number }) {
  return (
    <div className="node" data-testid={`node-${id}`}>
      <strong>{title}</strong>
      <div className="hint">{detail}</div>
      {m && (
        <div className="node-counts">
          {count(m.entered ?? 0)} entered · {count(m.waiting ?? 0)} waiting
          {m.sent != null && m.sent > 0 ? ` · ${count(m.sent)} sent` : ""}
          {m.failed ? ` · ${count(m.failed)} failed` : ""}
        </div>
      )}
    </div>
  );
}

function Canvas({ draft, setDraft, metrics, selected, select }: { draft: Draft; setDraft: (d: Draft) => void; metrics: Metrics | null; selected: string | null; select: (id: string) => void }) {
  // What React Flow measured and where nodes were dragged (kept across renders: a node
  // React Flow has not measured stays hidden).
  const [layout, setLayout] = useState<Record<string, Pick<Node, "position" | "measured">>>({});
  const positions = Object.fromEntries(Object.entries(layout).map(([k, v]) => [k, v.position]));
  const nodes: Node[] = useMemo(
    () => [
      {
        id: "trigger",
        position: positions.trigger ?? { x: 200, y: 0 },
        data: { label: label("trigger", "Trigger", draft.trigger || "(no event)") },
        selected: selected === "trigger",
        type: "input",
        measured: layout.trigger?.measured,
      },
      ...draft.steps.map((s, i) => ({
        id: s.id,
        position: positions[s.id] ?? { x: 200, y: 110 * (i + 1) },
        data: {
          label: label(
            s.id,
            LABELS[s.kind],
            s.kind === "send" ? `${s.channel}: ${s.subject}` : s.kind === "delay" ? `${s.minutes} min` : s.kind === "wait_for" ? `${s.name}, up to ${s.minutes} min` : s.name,
            metrics?.steps?.[s.id],
          ),
        },
        selected: selected === s.id,
        measured: layout[s.id]?.measured,
      })),
    ],
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [draft, layout, metrics, selected],
  );
  const arrows: Edge[] = useMemo(
    () => edges(draft).map((e) => ({ id: `${e.source}->${e.target}`, ...e, animated: true })),
    [draft],
  );
  const onNodesChange = useCallback(
    (changes: NodeChange[]) => {
      const moved = applyNodeChanges(changes, nodes);
      setLayout(Object.fromEntries(moved.map((n) => [n.id, { position: n.position, measured: n.measured }])));
    },
    [nodes],
  );
  const onConnect = useCallback(
    (c: Connection) => {
      if (!c.source || !c.target || c.source === "trigger" || c.target === "trigger") return;
      setDraft({ ...draft, steps: draft.steps.map((s) => (s.id === c.source ? { ...s, next: c.target } : s)) });
    },
    [draft, setDraft],
  );
  return (
    <div className="canvas" aria-label="Workflow canvas">
      <ReactFlow
        // Fitted again when steps are added or removed.
        key={draft.steps.length}
        fitViewOptions={{ maxZoom: 1, padding: 0.2 }}
        nodes={nodes}
        edges={arrows}
        onNodesChange={onNodesChange}
        onConnect={onConnect}
        onNodeClick={(_, n) => select(n.id)}
        fitView
        proOptions={{ hideAttribution: true }}
      >
        <Background />
        <Controls />
      </ReactFlow>
    </div>
  );
}

const EMPTY: Draft = { id: "", name: "", trigger: "Product Added", goal: "Order Completed", steps: [] };

export default function Workflows() {
  const s = useSession();
  const { can } = useAuth();
  const [list, reload] = useLoad(
    () => call(() => api.GET("/api/v1/workflows")) as Promise<{ workflows?: Schemas["Workflow"][] }>,
    [s.tokens.tenant_id],
  );
  const [draft, setDraft] = useState<Draft | null>(null);
  const [saved, setSaved] = useState<Schemas["Workflow"] | null>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const [metrics, setMetrics] = useState<Metrics | null>(null);
  const [backtest, setBacktest] = useState<Record<string, unknown> | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<string | null>(null);
  // Parts of a saved workflow the canvas cannot edit yet: it is shown read only.
  const [foreign, setForeign] = useState<string[]>([]);
  const editable = can("workflows.edit") && foreign.length === 0;

  useEffect(() => {
    if (!saved?.id) return setMetrics(null);
    call(() => api.GET("/api/v1/workflows/{id}/metrics", { params: { path: { id: saved.id as string } } }))
      .then((m) => setMetrics(m as Metrics))
      .catch(() => setMetrics(null));
  }, [saved]);

  async function open(listed: Schemas["Workflow"]) {
    // The list leaves definitions out: the workflow itself has its latest.
    let w = listed;
    try {
      w = (await call(() => api.GET("/api/v1/workflows/{id}", { params: { path: { id: String(listed.id) } } }))) as Schemas["Workflow"];
    } catch (e) {
      setError(e);
      return;
    }
    setSaved(w);
    setBacktest(null);
    setStatus(null);
    setForeign(unsupported((w.definition ?? {}) as Record<string, unknown>));
    setDraft(fromDefinition(String(w.id), String(w.name ?? w.id), (w.definition ?? {}) as Record<string, unknown>));
    setSelected("trigger");
  }

  async function save() {
    if (!draft) return;
    setError(null);
    try {
      const body = { id: draft.id || undefined, name: draft.name, definition: definition(draft) as never };
      const w = (await call(() =>
        saved?.id
          ? api.PUT("/api/v1/workflows/{id}", { params: { path: { id: saved.id as string } }, body })
          : api.POST("/api/v1/workflows", { body }),
      )) as Schemas["Workflow"];
      setSaved(w);
      setStatus(`Saved version ${w.latest_version}.`);
      reload();
    } catch (e) {
      setError(e);
    }
  }

  async function toggle(enable: boolean) {
    if (!saved?.id) return;
    setError(null);
    try {
      const path = enable ? "/api/v1/workflows/{id}/enable" : "/api/v1/workflows/{id}/pause";
      const w = (await call(() => api.POST(path, { params: { path: { id: saved.id as string } } }))) as Schemas["Workflow"];
      setSaved({ ...saved, ...w });
      setStatus(enable ? `Enabled version ${w.enabled_version}.` : "Paused.");
      reload();
    } catch (e) {
      setError(e);
    }
  }

  async function runBacktest() {
    if (!saved?.id || !draft) return;
    setError(null);
    const to = endOfToday();
    try {
      const r = await call(() =>
        api.POST("/api/v1/workflows/{id}/backtest", {
          params: { path: { id: saved.id as string } },
          body: { from: new Date(to.getTime() - 30 * DAY).toISOString(), to: to.toISOString(), definition: definition(draft) } as never,
        }),
      );
      setBacktest(r as Record<string, unknown>);
    } catch (e) {
      setError(e);
    }
  }

  const add = (kind: StepKind) => {
    if (!draft) return;
    const step = newStep(kind, draft.steps.map((x) => x.id));
    setDraft({ ...draft, steps: [...draft.steps, step] });
    setSelected(step.id);
  };

  return (
    <section aria-labelledby="workflows-title">
      <h1 id="workflows-title">Workflows</h1>
      <div className="card">
        <div className="row">
          <h2 className="grow">Workflows</h2>
          {editable && (
            <button
              type="button"
              onClick={() => {
                setSaved(null);
                setMetrics(null);
                setBacktest(null);
                setStatus(null);
                setForeign([]);
                setDraft({ ...EMPTY });
                setSelected("trigger");
              }}
            >
              New workflow
            </button>
          )}
        </div>
        <Loaded load={list} reload={reload}>
          {(l) =>
            (l.workflows ?? []).length === 0 ? (
              <Empty>No workflows yet.</Empty>
            ) : (
              <table className="table" aria-label="Workflows">
                <thead>
                  <tr>
                    <th>Name</th>
                    <th>Status</th>
                    <th>Versions</th>
                    <th />
                  </tr>
                </thead>
                <tbody>
                  {(l.workflows ?? []).map((w) => (
                    <tr key={w.id}>
                      <td>{w.name}</td>
                      <td data-testid={`status-${w.id}`}>{w.status}</td>
                      <td className="num">
                        {w.latest_version}
                        {w.enabled_version != null ? ` (v${w.enabled_version} live)` : ""}
                      </td>
                      <td>
                        <button type="button" onClick={() => void open(w)}>
                          Open
                        </button>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Loaded>
      </div>
      {draft && (
        <div className="card">
          <div className="row">
            <label className="grow">
              Name
              <input aria-label="Workflow name" value={draft.name} onChange={(e) => setDraft({ ...draft, name: e.target.value })} readOnly={!editable} />
            </label>
            {editable && (
              <>
                <button type="button" className="primary" onClick={() => void save()} disabled={!draft.name.trim() || draft.steps.length === 0}>
                  Save version
                </button>
                {saved?.id && (
                  <button type="button" onClick={() => void runBacktest()}>
                    Backtest 30 days
                  </button>
                )}
              </>
            )}
            {saved?.id && can("workflows.enable") && (
              <button type="button" onClick={() => void toggle(saved.status !== "enabled")}>
                {saved.status === "enabled" ? "Pause" : "Enable"}
              </button>
            )}
          </div>
          {foreign.length > 0 && (
            <p className="hint" role="note">
              Read only here: the canvas cannot edit {foreign.join("; ")} yet (change them through the API).
            </p>
          )}
          {status && <p role="status">{status}</p>}
          {error != null && <ErrorState error={error} />}
          {editable && (
            <div className="palette" role="toolbar" aria-label="Add a step">
              {KINDS.map((k) => (
                <button key={k} type="button" onClick={() => add(k)}>
                  + {LABELS[k]}
                </button>
              ))}
            </div>
          )}
          <div className="builder-area">
            <Canvas draft={draft} setDraft={setDraft} metrics={metrics} selected={selected} select={setSelected} />
            {editable ? <Panel draft={draft} selected={selected} set={setDraft} /> : <div className="panel hint">Read only.</div>}
          </div>
          {metrics && (
            <p className="hint" data-testid="journey-counts">
              {count(metrics.journeys?.entered ?? 0)} journeys entered, {count(metrics.journeys?.converted ?? 0)} converted.
              {Object.values(metrics.steps ?? {}).some((x) => (x.failed ?? 0) > 0) && " Some messages failed: see the dead letters below."}
            </p>
          )}
          {backtest && (
            <section aria-label="Backtest" className="backtest">
              <h2>Backtest, last 30 days</h2>
              <p>
                {count((backtest.journeys as { entered?: number })?.entered ?? 0)} would have entered,{" "}
                {count((backtest.journeys as { converted?: number })?.converted ?? 0)} converted, {count(backtest.message_count as number)} messages.
              </p>
            </section>
          )}
          {saved?.id && (
            <Versions
              key={`${saved.id}/${saved.latest_version}`}
              id={saved.id}
              live={saved.enabled_version ?? null}
              restore={
                editable
                  ? (v, d) => {
                      setDraft(fromDefinition(String(saved.id), draft.name, d));
                      setForeign(unsupported(d));
                      setStatus(`Version ${v} is in the editor: save it to make it the newest version.`);
                    }
                  : undefined
              }
            />
          )}
        </div>
      )}
      {saved?.id && can("pii.view") && <DeadLetters workflow={saved.id} />}
    </section>
  );
}

interface Version {
  version?: number;
  definition?: Record<string, unknown>;
  created_by?: string;
  created_at?: string;
}

/// A workflow's versions, newest first, each with what changed from the one before.
function Versions({
  id,
  live,
  restore,
}: {
  id: string;
  live: number | null;
  restore?: (version: number, d: Record<string, unknown>) => void;
}) {
  const s = useSession();
  const [load, reload] = useLoad(
    () =>
      call(() => api.GET("/api/v1/workflows/{id}/versions", { params: { path: { id } } })) as Promise<{
        versions?: Version[];
      }>,
    [id],
  );
  const [shown, setShown] = useState<number | null>(null);
  return (
    <section aria-label="Versions" className="versions">
      <h2>Versions</h2>
      <Loaded load={load} reload={reload}>
        {(l) => {
          const all = l.versions ?? [];
          const text = (v?: Version) => (v ? JSON.stringify(v.definition ?? {}, null, 2) : "");
          return (
            <ol reversed>
              {[...all].reverse().map((v) => {
                const i = all.indexOf(v);
                return (
                  <li key={v.version} data-testid={`version-${v.version}`}>
                    <strong>v{v.version}</strong>
                    {v.version === live && <span className="badge">live</span>} {dateTime(v.created_at, s.locale)} by{" "}
                    {v.created_by}{" "}
                    <button type="button" onClick={() => setShown(shown === v.version ? null : (v.version ?? null))}>
                      {shown === v.version ? "Hide changes" : i === 0 ? "Show" : `Changes from v${all[i - 1].version}`}
                    </button>{" "}
                    {restore && i < all.length - 1 && (
                      <button type="button" onClick={() => restore(Number(v.version), v.definition ?? {})}>
                        Restore
                      </button>
                    )}
                    {shown === v.version && (
                      <pre className="diff" aria-label={`Changes in v${v.version}`}>
                        {lineDiff(text(all[i - 1]), text(v)).map((d, k) => (
                          <span key={k} className={d.op === "+" ? "add" : d.op === "-" ? "del" : undefined}>
                            {d.op} {d.text}
                            {"\n"}
                          </span>
                        ))}
                      </pre>
                    )}
                  </li>
                );
              })}
            </ol>
          );
        }}
      </Loaded>
    </section>
  );
}
