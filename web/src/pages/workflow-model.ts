// The workflow a canvas edits, and the API's definition it becomes (see
// crates/model/src/workflow.rs): a trigger, re-entry and holdout, steps in order unless one
// says where to go, a goal. Every action of the API has a node; the few parts the side panel
// does not edit (property filters on events, other template parts) are kept as they were
// saved and named in the panel, so saving from the canvas never drops them.
import { blank, condition, rulesOf, type Match, type Rule } from "../components/Rules";

export type StepKind =
  | "delay"
  | "delay_until"
  | "delay_until_best_hour"
  | "delay_until_trait"
  | "wait_for"
  | "branch"
  | "split"
  | "send"
  | "update_trait"
  | "add_tag"
  | "remove_tag"
  | "webhook"
  | "exit";

export type TriggerKind = "event" | "segment_entered" | "segment_exited" | "tag_added" | "tag_removed" | "schedule" | "api";
export type Reentry = "once" | "after_exit" | "after_days" | "always";
export type Category = "marketing" | "transactional";
type Obj = Record<string, unknown>;

export interface Step {
  id: string;
  kind: StepKind;
  /// delay: minutes; wait_for: timeout minutes; delay_until_trait: the offset in minutes.
  minutes: number;
  /// wait_for: the event; update_trait, delay_until_trait: the trait; add_tag, remove_tag: the tag.
  name: string;
  /// update_trait: the value (JSON, or plain text).
  value: string;
  /// send: the channel, the template's subject and body, its category and subscription group.
  channel: string;
  subject: string;
  /// send: the template's body; webhook: the body template (empty: the person and event).
  body: string;
  category: Category;
  subscription: string;
  /// webhook: where to.
  url: string;
  /// delay_until, delay_until_best_hour: `HH:MM` and the weekdays (every day when empty).
  time: string;
  weekdays: string[];
  /// branch: its condition.
  rules: Rule[];
  match: Match;
  /// split: the variants' weights.
  weights: number[];
  /// Where to go after this step (the next in order when empty).
  next?: string;
  /// Where each of several exits goes (branch `then`/`else`, wait_for `event`/`timeout`,
  /// split `0`, `1`, …; the default when absent).
  exits: Record<string, string | undefined>;
  /// Fields of the action the panel does not edit, kept as saved (`where`, `same`, a
  /// template's other parts under `template`).
  extra: Obj;
}

export interface Draft {
  id: string;
  name: string;
  triggerKind: TriggerKind;
  /// The event, the segment id or the tag; for a schedule, its segment (everyone when empty).
  trigger: string;
  /// schedule: five cron fields.
  cron: string;
  goal: string;
  goalDays: number;
  reentry: Reentry;
  reentryDays: number;
  holdout: number;
  steps: Step[];
  /// Kept as saved: the trigger event's and the goal's other fields (property filters).
  triggerExtra: Obj;
  goalExtra: Obj;
}

export function newDraft(d: Partial<Draft> = {}): Draft {
  return {
    id: "",
    name: "",
    triggerKind: "event",
    trigger: "Product Added",
    cron: "0 9 * * MON",
    goal: "Order Completed",
    goalDays: 7,
    reentry: "after_exit",
    reentryDays: 30,
    holdout: 0,
    steps: [],
    triggerExtra: {},
    goalExtra: {},
    ...d,
  };
}

export const LABELS: Record<StepKind, string> = {
  delay: "Delay",
  delay_until: "Wait until a time",
  delay_until_best_hour: "Wait for best hour",
  delay_until_trait: "Wait until a trait's time",
  wait_for: "Wait for event",
  branch: "Branch",
  split: "A/B split",
  send: "Send message",
  update_trait: "Update trait",
  add_tag: "Add tag",
  remove_tag: "Remove tag",
  webhook: "Call webhook",
  exit: "Exit",
};

export const TRIGGERS: Record<TriggerKind, string> = {
  event: "a person does an event",
  segment_entered: "a person enters a segment",
  segment_exited: "a person leaves a segment",
  tag_added: "a tag is added",
  tag_removed: "a tag is removed",
  schedule: "on a schedule",
  api: "only through the API",
};

export const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

export function newStep(kind: StepKind, taken: string[]): Step {
  let n = 1;
  while (taken.includes(`${kind}-${n}`)) n++;
  return {
    id: `${kind}-${n}`,
    kind,
    minutes: kind === "delay_until_trait" ? 0 : 60,
    name:
      kind === "wait_for"
        ? "Order Completed"
        : kind === "add_tag" || kind === "remove_tag"
          ? "engaged"
          : kind === "update_trait"
            ? "contacted"
            : kind === "delay_until_trait"
              ? "renewal_date"
              : "",
    value: "true",
    channel: "email",
    subject: kind === "send" ? "{{ traits.first_name }}, you left something behind" : "",
    body: kind === "send" ? "Your cart is waiting." : "",
    category: "marketing",
    subscription: "",
    url: "",
    time: "10:00",
    weekdays: [],
    rules: [blank()],
    match: "and",
    weights: [50, 50],
    exits: {},
    extra: {},
  };
}

/// The exits of a step: several for a branch, a split and a wait, none for an exit.
export function outputs(s: Step): { handle: string; label: string }[] {
  switch (s.kind) {
    case "exit":
      return [];
    case "branch":
      return [
        { handle: "then", label: "yes" },
        { handle: "else", label: "no" },
      ];
    case "wait_for":
      return [
        { handle: "event", label: "did it" },
        { handle: "timeout", label: "timed out" },
      ];
    case "split": {
      const total = s.weights.reduce((a, b) => a + b, 0) || 1;
      return s.weights.map((w, i) => ({ handle: String(i), label: `${String.fromCharCode(65 + (i % 26))} ${Math.round((100 * w) / total)}%` }));
    }
    default:
      return [{ handle: "next", label: "" }];
  }
}

const some = (v: string | undefined, key: string): Obj => (v ? { [key]: v } : {});

/// A trait's value as typed: JSON when it reads as JSON (`42`, `true`, `"42"`), else text.
function parsed(v: string): unknown {
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

/// The inverse of `parsed`: text that would read as JSON is quoted.
function shown(v: unknown): string {
  if (typeof v !== "string") return JSON.stringify(v ?? null);
  return parsed(v) === v ? v : JSON.stringify(v);
}

function action(s: Step): unknown {
  const { template: keptTemplate, ...extra } = s.extra as { template?: Obj } & Obj;
  switch (s.kind) {
    case "delay":
      return { ...extra, minutes: s.minutes };
    case "delay_until":
    case "delay_until_best_hour":
      return { ...extra, time: s.time, ...(s.weekdays.length ? { weekdays: s.weekdays } : {}) };
    case "delay_until_trait":
      return { ...extra, trait: s.name, offset_minutes: s.minutes };
    case "wait_for":
      return { ...extra, event: s.name, timeout_minutes: s.minutes, ...some(s.exits.event, "on_event"), ...some(s.exits.timeout, "on_timeout") };
    case "branch":
      return { if: condition(s.rules, s.match), ...extra, ...some(s.exits.then, "then"), ...some(s.exits.else, "else") };
    case "split":
      return { ...extra, branches: s.weights.map((weight, i) => ({ weight, ...some(s.exits[String(i)], "next") })) };
    case "send":
      return {
        ...extra,
        channel: s.channel,
        template: { ...keptTemplate, ...(s.subject ? { subject: s.subject } : {}), ...(s.body ? { body: s.body } : {}) },
        category: s.category,
        ...some(s.subscription.trim(), "subscription"),
      };
    case "update_trait":
      return { name: s.name, value: parsed(s.value) };
    case "add_tag":
    case "remove_tag":
      return s.name;
    case "webhook":
      return { ...extra, url: s.url, ...some(s.body, "body") };
    case "exit":
      return {};
  }
}

function trigger(d: Draft): Obj {
  switch (d.triggerKind) {
    case "event":
      return { event: { ...d.triggerExtra, name: d.trigger } };
    case "schedule":
      return { schedule: { cron: d.cron, ...some(d.trigger.trim(), "segment") } };
    case "api":
      return { api: {} };
    default:
      return { [d.triggerKind]: d.trigger };
  }
}

export function definition(d: Draft): Record<string, unknown> {
  return {
    trigger: trigger(d),
    reentry: d.reentry === "after_days" ? { after_days: d.reentryDays } : d.reentry,
    ...(d.goal.trim() ? { goal: { ...d.goalExtra, event: d.goal.trim(), within_days: d.goalDays } } : {}),
    holdout_percent: d.holdout,
    steps: d.steps.map((s) => ({ id: s.id, [s.kind]: action(s), ...some(s.next, "next") })),
  };
}

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown, or = ""): string => (typeof v === "string" ? v : or);
const num = (v: unknown, or = 0): number => (typeof v === "number" ? v : or);
/// `o` without `keys`.
function without(o: Obj, keys: string[]): Obj {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
}

const KINDS = Object.keys(LABELS) as StepKind[];

function stepOf(raw: Obj): Step {
  const kind = KINDS.find((k) => k in raw) ?? "exit";
  const a = raw[kind];
  const o: Obj = isObj(a) ? a : {};
  const s: Step = { ...newStep(kind, []), id: String(raw.id), next: typeof raw.next === "string" ? raw.next : undefined, subject: "", body: "" };
  switch (kind) {
    case "delay": {
      const total = num(o.seconds) + 60 * num(o.minutes) + 3600 * num(o.hours) + 86400 * num(o.days);
      return { ...s, minutes: Math.floor(total / 60), extra: total % 60 ? { seconds: total % 60 } : {} };
    }
    case "delay_until":
    case "delay_until_best_hour":
      return { ...s, time: str(o.time), weekdays: Array.isArray(o.weekdays) ? o.weekdays.map(String) : [], extra: without(o, ["time", "weekdays"]) };
    case "delay_until_trait":
      return { ...s, name: str(o.trait), minutes: num(o.offset_minutes), extra: without(o, ["trait", "offset_minutes"]) };
    case "wait_for":
      return {
        ...s,
        name: str(o.event),
        minutes: num(o.timeout_minutes, 60),
        exits: { event: o.on_event as string | undefined, timeout: o.on_timeout as string | undefined },
        extra: without(o, ["event", "timeout_minutes", "on_event", "on_timeout"]),
      };
    case "branch": {
      const r = rulesOf(o.if);
      return {
        ...s,
        ...(r ?? {}),
        exits: { then: o.then as string | undefined, else: o.else as string | undefined },
        // A condition the rules cannot show is kept as it is (and the canvas is read only).
        extra: without(o, r ? ["if", "then", "else"] : ["then", "else"]),
      };
    }
    case "split": {
      const branches = (Array.isArray(o.branches) ? o.branches : []).filter(isObj);
      return {
        ...s,
        weights: branches.map((b) => num(b.weight, 1)),
        exits: Object.fromEntries(branches.map((b, i) => [String(i), b.next as string | undefined])),
        extra: without(o, ["branches"]),
      };
    }
    case "send": {
      const t: Obj = isObj(o.template) ? o.template : {};
      const keptTemplate = without(t, ["subject", "body"]);
      return {
        ...s,
        channel: str(o.channel, "email"),
        subject: str(t.subject),
        body: str(t.body),
        category: o.category === "transactional" ? "transactional" : "marketing",
        subscription: str(o.subscription),
        extra: { ...without(o, ["channel", "template", "category", "subscription"]), ...(Object.keys(keptTemplate).length ? { template: keptTemplate } : {}) },
      };
    }
    case "update_trait":
      return { ...s, name: str(o.name), value: shown(o.value) };
    case "add_tag":
    case "remove_tag":
      return { ...s, name: str(a) };
    case "webhook":
      return { ...s, url: str(o.url), body: str(o.body), extra: without(o, ["url", "body"]) };
    case "exit":
      return s;
  }
}

/// A saved definition read back into a draft.
export function fromDefinition(id: string, name: string, def: Record<string, unknown>): Draft {
  const t: Obj = isObj(def.trigger) ? def.trigger : {};
  const kind = (Object.keys(TRIGGERS) as TriggerKind[]).find((k) => k in t) ?? "event";
  const d = newDraft({ id, name, triggerKind: kind, trigger: "", goal: "" });
  if (kind === "event" && isObj(t.event)) {
    d.trigger = str(t.event.name);
    d.triggerExtra = without(t.event, ["name"]);
  } else if (kind === "schedule" && isObj(t.schedule)) {
    d.cron = str(t.schedule.cron);
    d.trigger = str(t.schedule.segment);
  } else if (kind !== "api") {
    d.trigger = str(t[kind]);
  }
  if (isObj(def.goal)) {
    d.goal = str(def.goal.event);
    d.goalDays = num(def.goal.within_days, 7);
    d.goalExtra = without(def.goal, ["event", "within_days"]);
  }
  if (isObj(def.reentry)) {
    d.reentry = "after_days";
    d.reentryDays = num(def.reentry.after_days, 30);
  } else if (typeof def.reentry === "string") {
    d.reentry = def.reentry as Reentry;
  }
  d.holdout = num(def.holdout_percent);
  d.steps = (Array.isArray(def.steps) ? def.steps : []).filter(isObj).map(stepOf);
  return d;
}

/// The canvas's arrows: trigger → first step, then each exit of a step to where it goes
/// (its own target, else the step's `next`, else the step after it).
export function edges(d: Draft): { source: string; sourceHandle?: string; target: string; label?: string }[] {
  const out: { source: string; sourceHandle?: string; target: string; label?: string }[] = [];
  if (d.steps[0]) out.push({ source: "trigger", target: d.steps[0].id });
  d.steps.forEach((s, i) => {
    const fallback = s.next ?? d.steps[i + 1]?.id;
    for (const o of outputs(s)) {
      const to = o.handle === "next" ? fallback : (s.exits[o.handle] ?? fallback);
      if (to) out.push({ source: s.id, sourceHandle: o.handle, target: to, ...(o.label ? { label: o.label } : {}) });
    }
  });
  return out;
}

/// Where each node sits on a fresh canvas: in rows by how many arrows it is from the trigger
/// (breadth first, so a branch's exits sit side by side in the order of its exits), centred
/// within a row; steps no arrow reaches come last, one row each. Workflows are a few dozen
/// steps, so this simple layering is enough.
export function placed(d: Draft, dx = 220, dy = 120): Record<string, { x: number; y: number }> {
  const after = new Map<string, string[]>();
  for (const e of edges(d)) after.set(e.source, [...(after.get(e.source) ?? []), e.target]);
  const row = new Map<string, number>([["trigger", 0]]);
  const order = ["trigger"];
  for (let i = 0; i < order.length; i++) {
    for (const t of after.get(order[i]) ?? []) {
      if (row.has(t)) continue;
      row.set(t, (row.get(order[i]) ?? 0) + 1);
      order.push(t);
    }
  }
  let last = Math.max(...row.values());
  for (const s of d.steps) {
    if (row.has(s.id)) continue;
    row.set(s.id, ++last);
    order.push(s.id);
  }
  const rows = new Map<number, string[]>();
  for (const id of order) {
    const r = row.get(id) ?? 0;
    rows.set(r, [...(rows.get(r) ?? []), id]);
  }
  const out: Record<string, { x: number; y: number }> = {};
  for (const [r, ids] of rows) ids.forEach((id, i) => (out[id] = { x: 200 + (i - (ids.length - 1) / 2) * dx, y: r * dy }));
  return out;
}

/// `d` with the exit `handle` of step `source` going to `target` (`undefined`: the default).
export function connect(d: Draft, source: string, handle: string | null | undefined, target: string | undefined): Draft {
  return {
    ...d,
    steps: d.steps.map((s) => {
      if (s.id !== source) return s;
      if (!handle || handle === "next") return { ...s, next: target };
      return { ...s, exits: { ...s.exits, [handle]: target } };
    }),
  };
}

/// `d` without step `id`, and without the arrows that pointed at it.
export function removeStep(d: Draft, id: string): Draft {
  return {
    ...d,
    steps: d.steps
      .filter((s) => s.id !== id)
      .map((s) => ({
        ...s,
        next: s.next === id ? undefined : s.next,
        exits: Object.fromEntries(Object.entries(s.exits).map(([k, v]) => [k, v === id ? undefined : v])),
      })),
  };
}

/// What the panel keeps without editing, by part (for its note).
export function kept(extra: Obj): string[] {
  return Object.entries(extra).flatMap(([k, v]) =>
    k === "template" && isObj(v) ? Object.keys(v).map((t) => `template ${t}`) : [k === "where" ? "property filters" : k],
  );
}

/// What in a saved definition the canvas cannot edit (so it opens read only, and saving
/// cannot drop it): `[]` when everything is editable.
export function unsupported(def: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const k of Object.keys(def)) {
    if (!["trigger", "goal", "steps", "reentry", "holdout_percent"].includes(k)) out.push(k);
  }
  const t = def.trigger;
  const kinds = isObj(t) ? Object.keys(t) : [];
  if (kinds.length !== 1 || !(kinds[0] in TRIGGERS)) out.push("this trigger");
  else if (kinds[0] === "schedule" && isObj(t) && isObj(t.schedule) && Object.keys(t.schedule).some((k) => k !== "cron" && k !== "segment")) {
    out.push("the schedule's options");
  }
  if (isObj(def.reentry) && Object.keys(def.reentry).some((k) => k !== "after_days")) out.push("the re-entry rule");
  for (const raw of (Array.isArray(def.steps) ? def.steps : []).filter(isObj)) {
    const keys = Object.keys(raw).filter((k) => k !== "id" && k !== "next");
    if (keys.length !== 1 || !KINDS.includes(keys[0] as StepKind)) {
      out.push(`step ${String(raw.id)} (${keys.join(", ")})`);
      continue;
    }
    const a = raw[keys[0]];
    if (keys[0] === "branch" && isObj(a) && rulesOf(a.if) === null) out.push(`step ${String(raw.id)}'s condition`);
  }
  return out;
}

/// One line of a diff: kept (" "), removed ("-") or added ("+").
export interface DiffLine {
  op: " " | "-" | "+";
  text: string;
}

/// The lines that changed from `a` to `b` (a longest-common-subsequence diff; workflow
/// definitions are a few hundred lines at most).
export function lineDiff(a: string, b: string): DiffLine[] {
  const x = a.split("\n");
  const y = b.split("\n");
  // lcs[i][j]: the longest common subsequence of x[i..] and y[j..].
  const lcs = Array.from({ length: x.length + 1 }, () => new Array<number>(y.length + 1).fill(0));
  for (let i = x.length - 1; i >= 0; i--) {
    for (let j = y.length - 1; j >= 0; j--) {
      lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < x.length || j < y.length) {
    if (i < x.length && j < y.length && x[i] === y[j]) {
      out.push({ op: " ", text: x[i++] });
      j++;
    } else if (j < y.length && (i === x.length || lcs[i][j + 1] >= lcs[i + 1][j])) {
      out.push({ op: "+", text: y[j++] });
    } else {
      out.push({ op: "-", text: x[i++] });
    }
  }
  return out;
}
