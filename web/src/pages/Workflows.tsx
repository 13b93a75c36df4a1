// Workflows: the visual builder on a canvas (React Flow: add nodes from the palette, drag
// them, connect them, edit each in the side panel), save as a new version, enable or pause,
// per-node counts, a backtest over the last 30 days, and failed messages.
import { type ReactNode, useCallback, useEffect, useMemo, useState } from "react";
import {
  Background,
  Controls,
  Handle,
  Position,
  ReactFlow,
  applyNodeChanges,
  type Connection,
  type Edge,
  type Node,
  type NodeChange,
  type NodeProps,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { api, call, type Schemas } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Empty, ErrorState, Loaded, useLoad } from "../components/States";
import { DeadLetters } from "../components/DeadLetters";
import { DAY, count, dateTime, endOfToday } from "../format";
import { RuleList } from "../components/Rules";
import { EVENT_LIST, PROPERTY_LIST } from "../components/Suggestions";
import {
  LABELS,
  TRIGGERS,
  WEEKDAYS,
  connect,
  definition,
  edges,
  fromDefinition,
  kept,
  lineDiff,
  newDraft,
  newStep,
  outputs,
  placed,
  removeStep,
  unsupported,
  type Category,
  type Draft,
  type Reentry,
  type Step,
  type StepKind,
  type TriggerKind,
} from "./workflow-model";

interface Metrics {
  journeys?: { entered?: number; converted?: number };
  steps?: Record<string, { entered?: number; waiting?: number; sent?: number; converted?: number; failed?: number }>;
}

const KINDS: StepKind[] = [
  "wait_for",
  "delay",
  "delay_until",
  "delay_until_best_hour",
  "delay_until_trait",
  "branch",
  "split",
  "send",
  "webhook",
  "update_trait",
  "add_tag",
  "remove_tag",
  "exit",
];

/// A note on what the panel keeps as saved without editing it.
function Kept({ parts }: { parts: string[] }) {
  return parts.length > 0 ? <p className="hint">Also kept as saved (edit through the API): {parts.join(", ")}.</p> : null;
}

/// A select of where an exit goes (`none`: what the empty choice means).
function GoTo({
  label,
  name = label,
  none = "the default",
  value,
  steps,
  self,
  set,
}: {
  label: string;
  name?: string;
  none?: string;
  value?: string;
  steps: Step[];
  self: string;
  set: (v?: string) => void;
}) {
  return (
    <label>
      {label}
      <select aria-label={name} value={value ?? ""} onChange={(e) => set(e.target.value || undefined)}>
        <option value="">{none}</option>
        {steps
          .filter((s) => s.id !== self)
          .map((s) => (
            <option key={s.id} value={s.id}>
              {s.id}
            </option>
          ))}
      </select>
    </label>
  );
}

function TriggerPanel({ draft, set }: { draft: Draft; set: (d: Draft) => void }) {
  const k = draft.triggerKind;
  return (
    <div className="panel" aria-label="Node settings">
      <h2>Trigger</h2>
      <label>
        Start when
        <select aria-label="Trigger kind" value={k} onChange={(e) => set({ ...draft, triggerKind: e.target.value as TriggerKind, trigger: "", triggerExtra: {} })}>
          {(Object.keys(TRIGGERS) as TriggerKind[]).map((t) => (
            <option key={t} value={t}>
              {TRIGGERS[t]}
            </option>
          ))}
        </select>
      </label>
      {k === "schedule" && (
        <label>
          Cron (minute hour day month weekday, tenant's time zone)
          <input aria-label="Cron" value={draft.cron} onChange={(e) => set({ ...draft, cron: e.target.value })} />
        </label>
      )}
      {k !== "api" && (
        <label>
          {k === "event" ? "When a person does" : k === "schedule" ? "Members of the segment (everyone when empty)" : k.startsWith("tag") ? "Tag" : "Segment id"}
          <input list={k === "event" ? EVENT_LIST : undefined} aria-label={k === "event" ? "Trigger event" : "Trigger target"} value={draft.trigger} onChange={(e) => set({ ...draft, trigger: e.target.value })} />
        </label>
      )}
      <Kept parts={Object.keys(draft.triggerExtra).map((x) => (x === "where" ? "trigger property filters" : x))} />
      <label>
        Goal (ends the journey, counts a conversion)
        <input list={EVENT_LIST} aria-label="Goal event" value={draft.goal} onChange={(e) => set({ ...draft, goal: e.target.value })} />
      </label>
      {draft.goal.trim() && (
        <label>
          Counted within (days)
          <input type="number" min={1} aria-label="Goal days" value={draft.goalDays} onChange={(e) => set({ ...draft, goalDays: Number(e.target.value) })} />
        </label>
      )}
      <Kept parts={kept(draft.goalExtra).map((x) => `goal ${x}`)} />
      <label>
        A person may enter again
        <select aria-label="Re-entry" value={draft.reentry} onChange={(e) => set({ ...draft, reentry: e.target.value as Reentry })}>
          <option value="after_exit">once their journey has ended</option>
          <option value="after_days">some days after entering</option>
          <option value="always">every time (one journey per trigger)</option>
          <option value="once">never</option>
        </select>
      </label>
      {draft.reentry === "after_days" && (
        <label>
          Days
          <input type="number" min={1} aria-label="Re-entry days" value={draft.reentryDays} onChange={(e) => set({ ...draft, reentryDays: Number(e.target.value) })} />
        </label>
      )}
      <label>
        Holdout (% kept out of every message, to measure uplift)
        <input type="number" min={0} max={50} aria-label="Holdout percent" value={draft.holdout} onChange={(e) => set({ ...draft, holdout: Number(e.target.value) })} />
      </label>
    </div>
  );
}

function Panel({ draft, selected, set }: { draft: Draft; selected: string | null; set: (d: Draft) => void }) {
  if (selected === "trigger") return <TriggerPanel draft={draft} set={set} />;
  const step = draft.steps.find((s) => s.id === selected);
  if (!step) return <div className="panel hint">Select a node to edit it.</div>;
  const put = (s: Partial<Step>) => set({ ...draft, steps: draft.steps.map((x) => (x.id === step.id ? { ...x, ...s } : x)) });
  const k = step.kind;
  const outs = outputs(step);
  return (
    <div className="panel" aria-label="Node settings">
      <h2>{LABELS[k]}</h2>
      <p className="hint">Step {step.id}</p>
      {(k === "delay" || k === "wait_for" || k === "delay_until_trait") && (
        <label>
          {k === "delay" ? "Wait (minutes)" : k === "wait_for" ? "Give up after (minutes)" : "Offset (minutes, negative: before)"}
          <input
            type="number"
            min={k === "delay_until_trait" ? undefined : 1}
            aria-label="Minutes"
            value={step.minutes}
            onChange={(e) => put({ minutes: Number(e.target.value) })}
          />
        </label>
      )}
      {(k === "wait_for" || k === "update_trait" || k === "add_tag" || k === "remove_tag" || k === "delay_until_trait") && (
        <label>
          {k === "wait_for" ? "Event" : k === "add_tag" || k === "remove_tag" ? "Tag" : "Trait"}
          <input list={k === "wait_for" ? EVENT_LIST : k === "update_trait" || k === "delay_until_trait" ? PROPERTY_LIST : undefined} aria-label="Name" value={step.name} onChange={(e) => put({ name: e.target.value })} />
        </label>
      )}
      {k === "update_trait" && (
        <label>
          Value (JSON or text)
          <input aria-label="Value" value={step.value} onChange={(e) => put({ value: e.target.value })} />
        </label>
      )}
      {(k === "delay_until" || k === "delay_until_best_hour") && (
        <>
          <label>
            {k === "delay_until" ? "Time of day (their time zone)" : "Time for persons without a best hour"}
            <input type="time" aria-label="Time" value={step.time} onChange={(e) => put({ time: e.target.value })} />
          </label>
          <fieldset className="weekdays">
            <legend>On (every day when none)</legend>
            {WEEKDAYS.map((w) => (
              <label key={w}>
                <input
                  type="checkbox"
                  checked={step.weekdays.includes(w)}
                  onChange={(e) => put({ weekdays: e.target.checked ? WEEKDAYS.filter((x) => x === w || step.weekdays.includes(x)) : step.weekdays.filter((x) => x !== w) })}
                />
                {w}
              </label>
            ))}
          </fieldset>
        </>
      )}
      {k === "branch" && (
        <div className="branch-rules" role="group" aria-label="Condition">
          <RuleList rules={step.rules} match={step.match} set={(rules, match) => put({ rules, match })} />
        </div>
      )}
      {k === "split" && (
        <div role="group" aria-label="Variants">
          {step.weights.map((w, i) => (
            <div className="row" key={i}>
              <label className="grow">
                Variant {String.fromCharCode(65 + i)} weight
                <input
                  type="number"
                  min={1}
                  aria-label={`Variant ${String.fromCharCode(65 + i)} weight`}
                  value={w}
                  onChange={(e) => put({ weights: step.weights.map((x, j) => (j === i ? Number(e.target.value) : x)) })}
                />
              </label>
              {step.weights.length > 2 && (
                <button
                  type="button"
                  aria-label={`Remove variant ${String.fromCharCode(65 + i)}`}
                  onClick={() =>
                    put({
                      weights: step.weights.filter((_, j) => j !== i),
                      // The exits after it move up by one.
                      exits: Object.fromEntries(step.weights.filter((_, j) => j !== i).map((_, j) => [String(j), step.exits[String(j < i ? j : j + 1)]])),
                    })
                  }
                >
                  ✕
                </button>
              )}
            </div>
          ))}
          {step.weights.length < 26 && (
            <button type="button" onClick={() => put({ weights: [...step.weights, 50] })}>
              Add a variant
            </button>
          )}
        </div>
      )}
      {k === "send" && (
        <>
          <label>
            Channel
            <select aria-label="Channel" value={step.channel} onChange={(e) => put({ channel: e.target.value })}>
              {["email", "sms", "whatsapp", "push", "webhook"].map((c) => (
                <option key={c}>{c}</option>
              ))}
            </select>
          </label>
          {(step.channel === "email" || step.channel === "push") && (
            <label>
              {step.channel === "push" ? "Title" : "Subject"}
              <input aria-label="Subject" value={step.subject} onChange={(e) => put({ subject: e.target.value })} />
            </label>
          )}
          <label>
            Body
            <textarea aria-label="Body" rows={4} value={step.body} onChange={(e) => put({ body: e.target.value })} />
          </label>
          <label>
            Kind of message
            <select aria-label="Category" value={step.category} onChange={(e) => put({ category: e.target.value as Category })}>
              <option value="marketing">marketing (caps, quiet hours, consent)</option>
              <option value="transactional">transactional (only an opt-out stops it)</option>
            </select>
          </label>
          <label>
            Subscription group (optional)
            <input aria-label="Subscription" value={step.subscription} onChange={(e) => put({ subscription: e.target.value })} />
          </label>
        </>
      )}
      {k === "webhook" && (
        <>
          <label>
            URL
            <input type="url" aria-label="URL" value={step.url} onChange={(e) => put({ url: e.target.value })} />
          </label>
          <label>
            Body template (empty: the person and the event)
            <textarea aria-label="Body" rows={4} value={step.body} onChange={(e) => put({ body: e.target.value })} />
          </label>
        </>
      )}
      <Kept parts={kept(step.extra)} />
      {outs.length > 1 &&
        outs.map((o) => (
          <GoTo
            key={o.handle}
            label={k === "branch" ? `If ${o.label}, go to` : k === "wait_for" ? `If it ${o.label === "did it" ? "happens" : "times out"}, go to` : `Variant ${o.label} goes to`}
            value={step.exits[o.handle]}
            steps={draft.steps}
            self={step.id}
            set={(v) => set(connect(draft, step.id, o.handle, v))}
          />
        ))}
      {k !== "exit" && (
        <GoTo
          label={outs.length > 1 ? "By default, go to" : "Then go to"}
          name="Then go to"
          none="the next step"
          value={step.next}
          steps={draft.steps}
          self={step.id}
          set={(next) => put({ next })}
        />
      )}
      <button type="button" onClick={() => set(removeStep(draft, step.id))}>
        Remove this step
      </button>
    </div>
  );
}

/// What a node says under its title.
function detail(s: Step): string {
  switch (s.kind) {
    case "send":
      return `${s.channel}: ${s.subject || s.body}`;
    case "delay":
      return `${s.minutes} min`;
    case "wait_for":
      return `${s.name}, up to ${s.minutes} min`;
    case "delay_until":
    case "delay_until_best_hour":
      return `${s.time}${s.weekdays.length ? ` on ${s.weekdays.join(", ")}` : ""}`;
    case "delay_until_trait":
      return `${s.name}${s.minutes ? ` ${s.minutes > 0 ? "+" : ""}${s.minutes} min` : ""}`;
    case "branch":
      return `${s.rules.length} rule${s.rules.length === 1 ? "" : "s"}`;
    case "split":
      return `${s.weights.length} variants`;
    case "webhook":
      return s.url || "(no URL)";
    case "update_trait":
      return `${s.name} = ${s.value}`;
    default:
      return s.name;
  }
}

function label(
  id: string,
  title: string,
  detail: string,
  m?: { entered?: number; waiting?: number; sent?: number; converted?: number; failed?: number },
) {
  return (
    <div className="node" data-testid={`node-${id}`}>
      <strong>{title}</strong>
      <div className="hint">{detail}</div>
      {m && (
        <div className="node-counts">
          {count(m.entered ?? 0)} entered · {count(m.waiting ?? 0)} waiting
          {m.sent != null && m.sent > 0 ? ` · ${count(m.sent)} sent` : ""}
          {` · ${count(m.converted ?? 0)} converted`}
          {m.failed ? ` · ${count(m.failed)} failed` : ""}
        </div>
      )}
    </div>
  );
}

type StepData = { label: ReactNode; outs: { handle: string; label: string }[] };

/// A step on the canvas: one handle in, one handle out per exit (labelled when several).
function StepNode({ data }: NodeProps<Node<StepData>>) {
  return (
    <>
      <Handle type="target" position={Position.Top} />
      {data.label}
      {data.outs.length > 1 && (
        <div className="node-outs">
          {data.outs.map((o) => (
            <span key={o.handle}>{o.label}</span>
          ))}
        </div>
      )}
      {data.outs.map((o, i) => (
        <Handle key={o.handle} id={o.handle} type="source" position={Position.Bottom} style={{ left: `${((2 * i + 1) * 100) / (2 * data.outs.length)}%` }} />
      ))}
    </>
  );
}

const NODE_TYPES = { step: StepNode };

function Canvas({ draft, setDraft, metrics, selected, select, editable }: { draft: Draft; setDraft: (d: Draft) => void; metrics: Metrics | null; selected: string | null; select: (id: string) => void; editable: boolean }) {
  // What React Flow measured and where nodes were dragged (kept across renders: a node
  // React Flow has not measured stays hidden).
  const [layout, setLayout] = useState<Record<string, Pick<Node, "position" | "measured">>>({});
  const positions = Object.fromEntries(Object.entries(layout).map(([k, v]) => [k, v.position]));
  const auto = useMemo(() => placed(draft), [draft]);
  const nodes: Node[] = useMemo(
    () => [
      {
        id: "trigger",
        position: positions.trigger ?? auto.trigger,
        data: { label: label("trigger", "Trigger", `${TRIGGERS[draft.triggerKind]}${draft.trigger ? `: ${draft.trigger}` : ""}`) },
        selected: selected === "trigger",
        type: "input",
        measured: layout.trigger?.measured,
      },
      ...draft.steps.map((s) => ({
        id: s.id,
        type: "step",
        position: positions[s.id] ?? auto[s.id],
        data: { label: label(s.id, LABELS[s.kind], detail(s), metrics?.steps?.[s.id]), outs: outputs(s) },
        selected: selected === s.id,
        measured: layout[s.id]?.measured,
      })),
    ],
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [draft, layout, metrics, selected],
  );
  const arrows: Edge[] = useMemo(
    () =>
      edges(draft).map((e) => ({
        id: `${e.source}:${e.sourceHandle ?? ""}->${e.target}`,
        ...e,
        animated: true,
        ...(e.label ? { labelBgPadding: [4, 2] as [number, number], labelStyle: { fontSize: 11 } } : {}),
      })),
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
      if (!editable || !c.source || !c.target || c.source === "trigger" || c.target === "trigger" || c.source === c.target) return;
      setDraft(connect(draft, c.source, c.sourceHandle, c.target));
    },
    [draft, setDraft, editable],
  );
  return (
    <div className="canvas" aria-label="Workflow canvas">
      <ReactFlow
        // Fitted again when steps are added or removed.
        key={draft.steps.length}
        fitViewOptions={{ maxZoom: 1, padding: 0.2 }}
        nodes={nodes}
        edges={arrows}
        nodeTypes={NODE_TYPES}
        nodesConnectable={editable}
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
                setDraft(newDraft());
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
            <Canvas draft={draft} setDraft={setDraft} metrics={metrics} selected={selected} select={setSelected} editable={editable} />
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
