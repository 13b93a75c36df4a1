// Rules about a person, as the segment builder and workflow branches edit them, and the
// API's condition they become (see crates/model/src/segment.rs). `rulesOf` reads a
// condition back; one it cannot show as rules (nesting, property filters) gives `null`.
import { EVENT_LIST, PROPERTY_LIST } from "./Suggestions";

export type RuleKind = "trait" | "computed" | "performed" | "not_performed" | "tag" | "in_segment";

export interface Rule {
  kind: RuleKind;
  /// The trait or computed attribute, the event, the tag or the segment id.
  name: string;
  op: string;
  value: string;
  /// `performed`: at least this many times, within these days.
  times: number;
  days: number;
}

export type Match = "and" | "or";

const OPS = ["equals", "not_equals", "contains", "gt", "gte", "lt", "lte", "exists", "not_exists"];
const COMPUTED = ["orders", "revenue", "events", "sessions", "days_since_last_seen", "days_since_last_order", "churn_risk", "clv_12m", "p_alive"];

/// A typed value: numbers as numbers, the rest as text.
function typed(v: string): string | number {
  const n = Number(v);
  return v.trim() !== "" && Number.isFinite(n) ? n : v;
}

function one(r: Rule): Record<string, unknown> {
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
    case "tag":
      return { tag: r.name };
    case "in_segment":
      return { in_segment: r.name };
  }
}

/// The API's condition for rules matched all (`and`) or any (`or`).
export function condition(rules: Rule[], match: Match): Record<string, unknown> {
  return rules.length === 1 ? one(rules[0]) : { [match]: rules.map(one) };
}

export const blank = (kind: RuleKind = "computed"): Rule => ({
  kind,
  name: kind === "performed" || kind === "not_performed" ? "Order Completed" : kind === "computed" ? "orders" : "",
  op: "gte",
  value: "1",
  times: 1,
  days: 30,
});

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
/// Only these keys (the API fills in defaults, so absent ones are fine).
const only = (o: Obj, keys: string[]) => Object.keys(o).every((k) => keys.includes(k));

/// A performed condition the builder shows: at least N times within D days, no filters.
function performed(p: unknown): { event: string; times: number; days: number } | null {
  if (!isObj(p) || !only(p, ["event", "count", "within_days"]) || typeof p.event !== "string") return null;
  const c = p.count ?? { op: "at_least", value: 1 };
  if (!isObj(c) || c.op !== "at_least" || typeof c.value !== "number") return null;
  if (typeof p.within_days !== "number") return null;
  return { event: p.event, times: c.value, days: p.within_days };
}

function ruleOf(c: unknown): Rule | null {
  if (!isObj(c) || Object.keys(c).length !== 1) return null;
  const [k, v] = Object.entries(c)[0];
  if ((k === "trait" || k === "computed") && isObj(v) && only(v, ["name", "op", "value"])) {
    if (typeof v.name !== "string" || typeof v.op !== "string" || !OPS.includes(v.op)) return null;
    if (k === "computed" && !COMPUTED.includes(v.name)) return null;
    if (v.value !== undefined && typeof v.value !== "string" && typeof v.value !== "number") return null;
    // A text that reads as a number would come back as one.
    if (typeof v.value === "string" && typed(v.value) !== v.value) return null;
    return { ...blank(k), name: v.name, op: v.op, value: v.value === undefined ? "" : String(v.value) };
  }
  if (k === "performed") {
    const p = performed(v);
    return p && { ...blank("performed"), name: p.event, times: p.times, days: p.days };
  }
  if (k === "not" && isObj(v) && Object.keys(v).length === 1 && "performed" in v) {
    const p = performed(v.performed);
    return p && p.times === 1 ? { ...blank("not_performed"), name: p.event, days: p.days } : null;
  }
  if ((k === "tag" || k === "in_segment") && typeof v === "string") return { ...blank(k), name: v };
  return null;
}

/// The rules a condition is made of, or `null` when the builder cannot show it.
export function rulesOf(c: unknown): { rules: Rule[]; match: Match } | null {
  if (isObj(c) && Object.keys(c).length === 1 && (Array.isArray(c.and) || Array.isArray(c.or))) {
    const match: Match = Array.isArray(c.and) ? "and" : "or";
    const parts = c[match] as unknown[];
    // One rule is written without the `and`: two or more read back the same way.
    if (parts.length < 2) return null;
    const rules = parts.map(ruleOf);
    return rules.every((r) => r !== null) ? { rules: rules as Rule[], match } : null;
  }
  const r = ruleOf(c);
  return r && { rules: [r], match: "and" };
}

export function RuleRow({ rule, set, remove, n }: { rule: Rule; set: (r: Rule) => void; remove?: () => void; n: number }) {
  const event = rule.kind === "performed" || rule.kind === "not_performed";
  const named = rule.kind === "tag" || rule.kind === "in_segment";
  return (
    <li className="rule">
      <select aria-label={`Rule ${n} kind`} value={rule.kind} onChange={(e) => set(blank(e.target.value as RuleKind))}>
        <option value="computed">computed attribute</option>
        <option value="trait">trait</option>
        <option value="performed">did the event</option>
        <option value="not_performed">did not do the event</option>
        <option value="tag">has the tag</option>
        <option value="in_segment">is in the segment</option>
      </select>
      {rule.kind === "computed" ? (
        <select aria-label={`Rule ${n} attribute`} value={rule.name} onChange={(e) => set({ ...rule, name: e.target.value })}>
          {COMPUTED.map((c) => (
            <option key={c}>{c}</option>
          ))}
        </select>
      ) : (
        <input
          list={event ? EVENT_LIST : rule.kind === "trait" ? PROPERTY_LIST : undefined}
          aria-label={`Rule ${n} ${event ? "event" : rule.kind === "tag" ? "tag" : rule.kind === "in_segment" ? "segment id" : "trait"}`}
          value={rule.name}
          onChange={(e) => set({ ...rule, name: e.target.value })}
          required
        />
      )}
      {named ? null : event ? (
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

/// The all/any choice of a list of rules.
export function MatchSelect({ match, set }: { match: Match; set: (m: Match) => void }) {
  return (
    <label>
      People who match
      <select value={match} onChange={(e) => set(e.target.value as Match)}>
        <option value="and">all of</option>
        <option value="or">any of</option>
      </select>
    </label>
  );
}

/// The rules, each editable and (while there are two or more) removable.
export function RuleItems({ rules, set }: { rules: Rule[]; set: (rules: Rule[]) => void }) {
  return (
    <ol className="rules">
      {rules.map((r, i) => (
        <RuleRow
          key={i}
          n={i + 1}
          rule={r}
          set={(x) => set(rules.map((y, j) => (j === i ? x : y)))}
          remove={rules.length > 1 ? () => set(rules.filter((_, j) => j !== i)) : undefined}
        />
      ))}
    </ol>
  );
}

/// A list of rules with its all/any choice and an "Add rule" button.
export function RuleList({ rules, match, set }: { rules: Rule[]; match: Match; set: (rules: Rule[], match: Match) => void }) {
  return (
    <>
      <MatchSelect match={match} set={(m) => set(rules, m)} />
      <RuleItems rules={rules} set={(r) => set(r, match)} />
      <button type="button" onClick={() => set([...rules, blank()], match)}>
        Add rule
      </button>
    </>
  );
}
