// Segments: a visual condition builder with a live count and sample before saving, the
// tenant's segments with their sizes, and a segment's size over time.
import { useEffect, useMemo, useState } from "react";
import type { EChartsOption } from "echarts";
import { api, call, type Schemas } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Chart } from "../components/Chart";
import { Empty, ErrorState, Loaded, useLoad } from "../components/States";
import { count, day } from "../format";

export type RuleKind = "trait" | "computed" | "performed" | "not_performed";

export interface Rule {
  kind: RuleKind;
  /// The trait or computed attribute, or the event.
  name: string;
  op: string;
  value: string;
  /// `performed`: at least this many times, within these days.
  times: number;
  days: number;
}

const OPS = ["equals", "not_equals", "contains", "gt", "gte", "lt", "lte", "exists", "not_exists"];
const COMPUTED = ["orders", "revenue", "events", "sessions", "days_since_last_seen", "days_since_last_order", "churn_risk", "clv_12m", "p_alive"];

/// A typed value: numbers as numbers, the rest as text.
function typed(v: string): string | number {
  const n = Number(v);
  return v.trim() !== "" && Number.isFinite(n) ? n : v;
}

/// The API's condition for rules matched all (`and`) or any (`or`).
export function condition(rules: Rule[], match: "and" | "or"): Record<string, unknown> {
  const one = (r: Rule): Record<string, unknown> => {
    switch (r.kind) {
      case "trait":
      case "computed":
        return {
          [r.kind]: {
            name: r.name,
            op: r.op,
            ...(r.op === "exists" || r.op === "not_exists" ? {} : { value: typed(r.value) }),
          },
        };
      case "performed":
        return {
          performed: { event: r.name, count: { op: "at_least", value: r.times }, within_days: r.days },
        };
      case "not_performed":
        return {
          not: { performed: { event: r.name, count: { op: "at_least", value: 1 }, within_days: r.days } },
        };
    }
  };
  return rules.length === 1 ? one(rules[0]) : { [match]: rules.map(one) };
}

const blank = (kind: RuleKind = "computed"): Rule => ({
  kind,
  name: kind === "performed" || kind === "not_performed" ? "Order Completed" : "orders",
  op: "gte",
  value: "1",
  times: 1,
  days: 30,
});

interface Preview {
  count?: number;
  sample?: number[];
  text?: string;
}

function RuleRow({ rule, set, remove, n }: { rule: Rule; set: (r: Rule) => void; remove?: () => void; n: number }) {
  const event = rule.kind === "performed" || rule.kind === "not_performed";
  return (
    <li className="rule">
      <select aria-label={`Rule ${n} kind`} value={rule.kind} onChange={(e) => set(blank(e.target.value as RuleKind))}>
        <option value="computed">computed attribute</option>
        <option value="trait">trait</option>
        <option value="performed">did the event</option>
        <option value="not_performed">did not do the event</option>
      </select>
      {rule.kind === "computed" ? (
        <select aria-label={`Rule ${n} attribute`} value={rule.name} onChange={(e) => set({ ...rule, name: e.target.value })}>
          {COMPUTED.map((c) => (
            <option key={c}>{c}</option>
          ))}
        </select>
      ) : (
        <input
          aria-label={event ? `Rule ${n} event` : `Rule ${n} trait`}
          value={rule.name}
          onChange={(e) => set({ ...rule, name: e.target.value })}
          required
        />
      )}
      {event ? (
        <>
          {rule.kind === "performed" && (
            <label>
              at least
              <input
                type="number"
                min={1}
                aria-label={`Rule ${n} times`}
                value={rule.times}
                onChange={(e) => set({ ...rule, times: Number(e.target.value) })}
              />
              times
            </label>
          )}
          <label>
            in the last
            <input
              type="number"
              min={1}
              aria-label={`Rule ${n} days`}
              value={rule.days}
              onChange={(e) => set({ ...rule, days: Number(e.target.value) })}
            />
            days
          </label>
        </>
      ) : (
        <>
          <select aria-label={`Rule ${n} operator`} value={rule.op} onChange={(e) => set({ ...rule, op: e.target.value })}>
            {OPS.map((o) => (
              <option key={o} value={o}>
                {o.replace("_", " ")}
              </option>
            ))}
          </select>
          {rule.op !== "exists" && rule.op !== "not_exists" && (
            <input aria-label={`Rule ${n} value`} value={rule.value} onChange={(e) => set({ ...rule, value: e.target.value })} />
          )}
        </>
      )}
      {remove && (
        <button type="button" aria-label={`Remove rule ${n}`} onClick={remove}>
          ✕
        </button>
      )}
    </li>
  );
}

function sizesChart(sizes: { day?: string; size?: number }[], l: Parameters<typeof day>[1]): EChartsOption {
  return {
    tooltip: { trigger: "axis" },
    grid: { left: 50, right: 20, top: 20, bottom: 30 },
    xAxis: { type: "category", data: sizes.map((s) => day(s.day ?? "", l)) },
    yAxis: { type: "value" },
    series: [{ type: "line", data: sizes.map((s) => s.size ?? 0), areaStyle: { opacity: 0.1 } }],
  };
}

function Sizes({ id }: { id: string }) {
  const s = useSession();
  const [load] = useLoad(
    () => call(() => api.GET("/api/v1/segments/{id}", { params: { path: { id } } })) as Promise<Schemas["Segment"]>,
    [id],
  );
  const option = useMemo(
    () => (load.state === "done" ? sizesChart(load.data.sizes ?? [], s.locale) : null),
    [load, s.locale],
  );
  return (
    <Loaded load={load}>
      {(seg) =>
        (seg.sizes ?? []).length === 0 ? (
          <Empty>Sizes are kept from the end of its first day.</Empty>
        ) : (
          option && <Chart label={`Size of ${seg.name} over time`} option={option} height={220} />
        )
      }
    </Loaded>
  );
}

export default function Segments() {
  const s = useSession();
  const { can } = useAuth();
  const [name, setName] = useState("");
  const [match, setMatch] = useState<"and" | "or">("and");
  const [rules, setRules] = useState<Rule[]>([blank()]);
  const [preview, setPreview] = useState<Preview | null>(null);
  const [previewError, setPreviewError] = useState<unknown>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [saveError, setSaveError] = useState<unknown>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [list, reload] = useLoad(
    () => call(() => api.GET("/api/v1/segments")) as Promise<{ segments?: Schemas["Segment"][] }>,
    [s.tokens.tenant_id],
  );
  const cond = useMemo(() => condition(rules, match), [rules, match]);
  const editable = can("segments.edit");
  // The live count, a moment after the last change.
  useEffect(() => {
    if (!editable) return;
    let live = true;
    const t = setTimeout(() => {
      call(() => api.POST("/api/v1/segments/preview", { body: { condition: cond as never, sample: 5 } }))
        .then((p) => {
          if (!live) return;
          setPreview(p as Preview);
          setPreviewError(null);
        })
        .catch((e) => live && setPreviewError(e));
    }, 350);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [cond, editable]);

  async function save() {
    setSaveError(null);
    try {
      const seg = (await call(() =>
        api.POST("/api/v1/segments", { body: { name, condition: cond as never } }),
      )) as Schemas["Segment"];
      setSaved(seg.name ?? name);
      reload();
    } catch (e) {
      setSaveError(e);
    }
  }

  return (
    <section aria-labelledby="segments-title">
      <h1 id="segments-title">Segments</h1>
      {editable && (
        <form
          className="card builder"
          aria-label="New segment"
          onSubmit={(e) => {
            e.preventDefault();
            void save();
          }}
        >
          <div className="row">
            <label className="grow">
              Name
              <input value={name} onChange={(e) => setName(e.target.value)} required placeholder="e.g. Loyal buyers" />
            </label>
            <label>
              People who match
              <select value={match} onChange={(e) => setMatch(e.target.value as "and" | "or")}>
                <option value="and">all of</option>
                <option value="or">any of</option>
              </select>
            </label>
          </div>
          <ol className="rules">
            {rules.map((r, i) => (
              <RuleRow
                key={i}
                n={i + 1}
                rule={r}
                set={(x) => setRules(rules.map((y, j) => (j === i ? x : y)))}
                remove={rules.length > 1 ? () => setRules(rules.filter((_, j) => j !== i)) : undefined}
              />
            ))}
          </ol>
          <div className="row">
            <button type="button" onClick={() => setRules([...rules, blank()])}>
              Add rule
            </button>
            <div className="live-count" aria-live="polite" data-testid="live-count">
              {previewError != null ? (
                <ErrorState error={previewError} />
              ) : preview ? (
                <>
                  <strong>{count(preview.count)}</strong> people match now
                </>
              ) : (
                "Counting…"
              )}
            </div>
            <button type="submit" className="primary">
              Save segment
            </button>
          </div>
          {preview?.text && <p className="hint">{preview.text}</p>}
          {saved && <p role="status">Saved “{saved}”.</p>}
          {saveError != null && <ErrorState error={saveError} />}
        </form>
      )}
      <div className="card">
        <h2>Segments</h2>
        <Loaded load={list} reload={reload}>
          {(l) =>
            (l.segments ?? []).length === 0 ? (
              <Empty>No segments yet.</Empty>
            ) : (
              <table className="table" aria-label="Segments">
                <thead>
                  <tr>
                    <th>Name</th>
                    <th>Condition</th>
                    <th>Size</th>
                    <th />
                  </tr>
                </thead>
                <tbody>
                  {(l.segments ?? []).map((x) => (
                    <tr key={x.id}>
                      <td>{x.name}</td>
                      <td className="hint">{x.text}</td>
                      <td className="num" data-testid={`size-${x.id}`}>
                        {count(x.size)}
                      </td>
                      <td>
                        <button type="button" onClick={() => setOpen(open === x.id ? null : (x.id ?? null))}>
                          {open === x.id ? "Hide" : "Size over time"}
                        </button>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Loaded>
        {open && <Sizes id={open} />}
      </div>
    </section>
  );
}
