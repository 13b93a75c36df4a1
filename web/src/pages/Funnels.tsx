// Funnels: steps, window, order mode, breakdown; the conversion chart and table; a step's
// drop-offs, each opening their profile.
import { useCallback, useMemo, useState } from "react";
import type { FormEvent } from "react";
import { Link } from "react-router-dom";
import { AddToDashboard, widgetOf } from "../components/AddToDashboard";
import type { EChartsOption } from "echarts";
import { query, type FunnelResult } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Chart } from "../components/Chart";
import { EVENT_LIST, PROPERTY_LIST } from "../components/Suggestions";
import { ErrorState, Loading } from "../components/States";
import { DAY, count, endOfToday, percent } from "../format";

const WINDOWS = [
  { label: "1 hour", seconds: 3600 },
  { label: "1 day", seconds: 86_400 },
  { label: "7 days", seconds: 604_800 },
  { label: "14 days", seconds: 1_209_600 },
  { label: "30 days", seconds: 2_592_000 },
];
const RANGES = [7, 30, 90];

export interface FunnelForm {
  steps: string[];
  windowSeconds: number;
  order: "ordered" | "strict" | "any";
  days: number;
  breakdown: string;
}

/// The query a form asks (`to`: the end of today, UTC).
export function funnelQuery(f: FunnelForm, now: Date): Record<string, unknown> {
  const to = endOfToday(now);
  const from = new Date(to.getTime() - f.days * DAY);
  return {
    kind: "funnel",
    from: from.toISOString(),
    to: to.toISOString(),
    window_seconds: f.windowSeconds,
    order: f.order,
    steps: f.steps.map((event) => ({ event: event.trim() })),
    ...(f.breakdown.trim()
      ? { breakdown: { property: f.breakdown.trim(), attribution: "first_touch", limit: 5 } }
      : {}),
  };
}

function chart(r: FunnelResult): EChartsOption {
  return {
    tooltip: { trigger: "axis" },
    grid: { left: 60, right: 20, top: 20, bottom: 40 },
    xAxis: { type: "category", data: r.steps.map((s, i) => `${i + 1}. ${s.event}`) },
    yAxis: { type: "value" },
    series: [
      {
        type: "bar",
        data: r.steps.map((s) => s.count),
        label: { show: true, position: "top" },
        itemStyle: { color: "#4f46e5" },
      },
    ],
  };
}

type Dropped = { step: number; persons: { user_ids: string[]; anonymous_ids: string[] }[]; total: number };

export default function Funnels() {
  const s = useSession();
  const { can } = useAuth();
  const [form, setForm] = useState<FunnelForm>({
    steps: ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"],
    windowSeconds: 604_800,
    order: "ordered",
    days: 30,
    breakdown: "",
  });
  const [result, setResult] = useState<FunnelResult | null>(null);
  const [asked, setAsked] = useState<Record<string, unknown> | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [dropped, setDropped] = useState<Dropped | null>(null);

  async function run(e?: FormEvent) {
    e?.preventDefault();
    setBusy(true);
    setError(null);
    setDropped(null);
    const q = funnelQuery(form, new Date());
    try {
      setResult(await query<FunnelResult>(q));
      setAsked(q);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  const showDropped = useCallback(
    async (step: number) => {
      if (!asked || step < 1) return;
      try {
        const r = await query<FunnelResult>({
          ...asked,
          persons: { step: step + 1, status: "dropped", limit: 50 },
        });
        setDropped({ step, persons: r.persons ?? [], total: r.persons_total ?? 0 });
      } catch (err) {
        setError(err);
      }
    },
    [asked],
  );
  const option = useMemo(() => (result ? chart(result) : null), [result]);
  const setStep = (i: number, v: string) =>
    setForm({ ...form, steps: form.steps.map((x, j) => (j === i ? v : x)) });

  return (
    <section aria-labelledby="funnels-title">
      <h1 id="funnels-title">Funnels</h1>
      <form className="card builder" onSubmit={run} aria-label="Funnel">
        <fieldset>
          <legend>Steps</legend>
          <ol>
            {form.steps.map((step, i) => (
              <li key={i}>
                <input
                  list={EVENT_LIST}
                  aria-label={`Step ${i + 1} event`}
                  value={step}
                  onChange={(e) => setStep(i, e.target.value)}
                  required
                />
                {form.steps.length > 2 && (
                  <button
                    type="button"
                    aria-label={`Remove step ${i + 1}`}
                    onClick={() => setForm({ ...form, steps: form.steps.filter((_, j) => j !== i) })}
                  >
                    ✕
                  </button>
                )}
              </li>
            ))}
          </ol>
          {form.steps.length < 32 && (
            <button type="button" onClick={() => setForm({ ...form, steps: [...form.steps, ""] })}>
              Add step
            </button>
          )}
        </fieldset>
        <div className="row">
          <label>
            Within
            <select
              value={form.windowSeconds}
              onChange={(e) => setForm({ ...form, windowSeconds: Number(e.target.value) })}
            >
              {WINDOWS.map((w) => (
                <option key={w.seconds} value={w.seconds}>
                  {w.label}
                </option>
              ))}
            </select>
          </label>
          <label>
            Order
            <select
              value={form.order}
              onChange={(e) => setForm({ ...form, order: e.target.value as FunnelForm["order"] })}
            >
              <option value="ordered">in order</option>
              <option value="strict">strictly consecutive</option>
              <option value="any">any order</option>
            </select>
          </label>
          <label>
            Over the last
            <select
              value={form.days}
              onChange={(e) => setForm({ ...form, days: Number(e.target.value) })}
            >
              {RANGES.map((d) => (
                <option key={d} value={d}>
                  {d} days
                </option>
              ))}
            </select>
          </label>
          <label>
            Breakdown by
            <input
              list={PROPERTY_LIST}
              placeholder="property, e.g. category"
              value={form.breakdown}
              onChange={(e) => setForm({ ...form, breakdown: e.target.value })}
            />
          </label>
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Calculating…" : "Calculate"}
          </button>
        </div>
      </form>
      {error != null && <ErrorState error={error} retry={() => void run()} />}
      {busy && !result && <Loading what="Calculating" />}
      {result && option && (
        <div className="card">
          <AddToDashboard
            widget={() =>
              asked &&
              widgetOf(
                "funnel",
                `Funnel: ${form.steps.join(" → ")}`,
                asked,
                form.days,
              )
            }
          />
          <Chart
            label="Persons reaching each step"
            option={option}
            onClick={(p) => void showDropped(p.dataIndex)}
          />
          <table className="table" aria-label="Funnel steps">
            <thead>
              <tr>
                <th>Step</th>
                <th>Persons</th>
                <th>Conversion</th>
                <th>From previous</th>
                <th>Dropped</th>
              </tr>
            </thead>
            <tbody>
              {result.steps.map((st, i) => (
                <tr key={i} data-testid={`step-${i + 1}`}>
                  <td>
                    {i + 1}. {st.event}
                  </td>
                  <td className="num" data-testid={`step-${i + 1}-count`}>
                    {count(st.count)}
                  </td>
                  <td className="num">{percent(st.conversion_rate)}</td>
                  <td className="num">{i === 0 ? "—" : percent(st.step_conversion_rate)}</td>
                  <td>
                    {i > 0 && can("pii.view") && (
                      <button type="button" onClick={() => void showDropped(i)}>
                        {count(result.steps[i - 1].count - st.count)} dropped
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {result.breakdown && result.breakdown.length > 0 && (
            <table className="table" aria-label="Breakdown">
              <thead>
                <tr>
                  <th>{form.breakdown}</th>
                  {result.steps.map((st, i) => (
                    <th key={i}>{st.event}</th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {result.breakdown.map((b) => (
                  <tr key={String(b.value)}>
                    <td>{b.value ?? "(none)"}</td>
                    {b.counts.map((c, i) => (
                      <td key={i} className="num">
                        {count(c)} ({percent(b.conversion_rates[i])})
                      </td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
      {dropped && (
        <section className="card" aria-label="Dropped persons">
          <h2>
            Dropped before step {dropped.step + 1} ({count(dropped.total)})
          </h2>
          <ul className="persons">
            {dropped.persons.map((p, i) => {
              const id = p.user_ids[0] ? `u:${p.user_ids[0]}` : `a:${p.anonymous_ids[0]}`;
              return (
                <li key={i}>
                  <Link to={`/people/${encodeURIComponent(id)}`}>{p.user_ids[0] ?? p.anonymous_ids[0]}</Link>
                </li>
              );
            })}
          </ul>
        </section>
      )}
      {!result && !busy && error == null && (
        <p className="hint">Choose the steps and press Calculate. Counts are persons in {s.tenant.name ?? "this tenant"}.</p>
      )}
    </section>
  );
}
