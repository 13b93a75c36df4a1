// The workflow a canvas edits, and the API's definition it becomes (see
// crates/model/src/workflow.rs): a trigger event, steps in order unless one says `next`,
// a goal.

export type StepKind = "delay" | "wait_for" | "send" | "update_trait" | "add_tag" | "exit";

export interface Step {
  id: string;
  kind: StepKind;
  /// delay: minutes; wait_for: timeout minutes.
  minutes: number;
  /// wait_for: the event; update_trait: the trait; add_tag: the tag.
  name: string;
  /// update_trait: the value.
  value: string;
  /// send: the channel and the template's subject and body.
  channel: string;
  subject: string;
  body: string;
  /// Where to go after this step (the next in order when empty).
  next?: string;
}

export interface Draft {
  id: string;
  name: string;
  trigger: string;
  goal: string;
  steps: Step[];
}

export const LABELS: Record<StepKind, string> = {
  delay: "Delay",
  wait_for: "Wait for event",
  send: "Send email",
  update_trait: "Update trait",
  add_tag: "Add tag",
  exit: "Exit",
};

export function newStep(kind: StepKind, taken: string[]): Step {
  let n = 1;
  while (taken.includes(`${kind}-${n}`)) n++;
  return {
    id: `${kind}-${n}`,
    kind,
    minutes: kind === "delay" ? 60 : 60,
    name: kind === "wait_for" ? "Order Completed" : kind === "add_tag" ? "engaged" : kind === "update_trait" ? "contacted" : "",
    value: "true",
    channel: "email",
    subject: "{{ traits.first_name }}, you left something behind",
    body: "Your cart is waiting.",
  };
}

function action(s: Step): Record<string, unknown> {
  switch (s.kind) {
    case "delay":
      return { delay: { minutes: s.minutes } };
    case "wait_for":
      return { wait_for: { event: s.name, timeout_minutes: s.minutes } };
    case "send":
      return { send: { channel: s.channel, template: { subject: s.subject, body: s.body } } };
    case "update_trait":
      return { update_trait: { name: s.name, value: s.value === "true" ? true : s.value === "false" ? false : s.value } };
    case "add_tag":
      return { add_tag: s.name };
    case "exit":
      return { exit: {} };
  }
}

export function definition(d: Draft): Record<string, unknown> {
  return {
    trigger: { event: { name: d.trigger } },
    ...(d.goal.trim() ? { goal: { event: d.goal.trim(), within_days: 7 } } : {}),
    steps: d.steps.map((s) => ({ id: s.id, ...action(s), ...(s.next ? { next: s.next } : {}) })),
  };
}

/// A saved definition read back into a draft (the actions the canvas edits; others are
/// shown as they are and kept).
export function fromDefinition(id: string, name: string, def: Record<string, unknown>): Draft {
  const trigger = (def.trigger as { event?: { name?: string } } | undefined)?.event?.name ?? "";
  const goal = (def.goal as { event?: string } | undefined)?.event ?? "";
  const steps = ((def.steps as Record<string, unknown>[]) ?? []).map((raw) => {
    const base = newStep("exit", []);
    const s: Step = { ...base, id: String(raw.id), next: raw.next as string | undefined };
    if (raw.delay) {
      const d = raw.delay as { minutes?: number; hours?: number; days?: number };
      return { ...s, kind: "delay" as const, minutes: (d.minutes ?? 0) + 60 * (d.hours ?? 0) + 1440 * (d.days ?? 0) };
    }
    if (raw.wait_for) {
      const w = raw.wait_for as { event?: string; timeout_minutes?: number };
      return { ...s, kind: "wait_for" as const, name: w.event ?? "", minutes: w.timeout_minutes ?? 60 };
    }
    if (raw.send) {
      const m = raw.send as { channel?: string; template?: { subject?: string; body?: string } };
      return { ...s, kind: "send" as const, channel: m.channel ?? "email", subject: m.template?.subject ?? "", body: m.template?.body ?? "" };
    }
    if (raw.update_trait) {
      const u = raw.update_trait as { name?: string; value?: unknown };
      return { ...s, kind: "update_trait" as const, name: u.name ?? "", value: String(u.value ?? "") };
    }
    if (typeof raw.add_tag === "string") return { ...s, kind: "add_tag" as const, name: raw.add_tag };
    return s;
  });
  return { id, name, trigger, goal, steps };
}

/// The canvas's arrows: trigger → first step, then each step to its `next`, or the one after.
export function edges(d: Draft): { source: string; target: string }[] {
  const out: { source: string; target: string }[] = [];
  if (d.steps[0]) out.push({ source: "trigger", target: d.steps[0].id });
  d.steps.forEach((s, i) => {
    if (s.kind === "exit") return;
    const to = s.next ?? d.steps[i + 1]?.id;
    if (to) out.push({ source: s.id, target: to });
  });
  return out;
}

const ACTIONS = ["delay", "wait_for", "send", "update_trait", "add_tag", "exit"];

/// What in a saved definition the canvas cannot edit yet (so it opens read only, and saving
/// cannot drop it): `[]` when everything is editable.
export function unsupported(def: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const k of Object.keys(def)) {
    if (!["trigger", "goal", "steps"].includes(k)) out.push(k);
  }
  const trigger = def.trigger as Record<string, unknown> | undefined;
  const event = trigger?.event as Record<string, unknown> | undefined;
  if (!event || Object.keys(trigger ?? {}).length !== 1) out.push("a trigger other than an event");
  else if (Object.keys(event).some((k) => k !== "name")) out.push("trigger filters");
  const goal = def.goal as Record<string, unknown> | undefined;
  if (goal && Object.keys(goal).some((k) => k !== "event" && k !== "within_days")) out.push("goal filters");
  for (const raw of (def.steps as Record<string, unknown>[]) ?? []) {
    const keys = Object.keys(raw).filter((k) => k !== "id" && k !== "next");
    const known = keys.length === 1 && ACTIONS.includes(keys[0]);
    if (!known) out.push(`step ${String(raw.id)} (${keys.join(", ")})`);
    const a = raw[keys[0]];
    if (keys[0] === "wait_for" && a && Object.keys(a).some((k) => k !== "event" && k !== "timeout_minutes")) {
      out.push(`step ${String(raw.id)}'s wait options`);
    }
    if (keys[0] === "send" && a && Object.keys(a).some((k) => k !== "channel" && k !== "template")) {
      out.push(`step ${String(raw.id)}'s send options`);
    }
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
