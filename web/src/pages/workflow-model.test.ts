import { connect, definition, edges, fromDefinition, lineDiff, newDraft, newStep, placed, removeStep, unsupported } from "./workflow-model";

test("a canvas draft becomes the API's definition, and reads back the same", () => {
  const wait = { ...newStep("wait_for", []), minutes: 45 };
  const mail = newStep("send", [wait.id]);
  const d = newDraft({ id: "cart", name: "Cart", steps: [wait, mail] });
  const def = definition(d);
  expect(def).toEqual({
    trigger: { event: { name: "Product Added" } },
    reentry: "after_exit",
    goal: { event: "Order Completed", within_days: 7 },
    holdout_percent: 0,
    steps: [
      { id: "wait_for-1", wait_for: { event: "Order Completed", timeout_minutes: 45 } },
      { id: "send-1", send: { channel: "email", template: { subject: mail.subject, body: mail.body }, category: "marketing" } },
    ],
  });
  const back = fromDefinition("cart", "Cart", def);
  expect(definition(back)).toEqual(def);
});

// Every action, trigger and option the API has, as the server stores it (its defaults
// filled in): read into the canvas and written back, nothing changes or is lost.
const EVERYTHING = {
  trigger: { event: { name: "Product Added", where: [{ property: "price", op: "gt", value: 10 }] } },
  reentry: { after_days: 14 },
  goal: { event: "Order Completed", where: [{ property: "revenue", op: "gt", value: 0 }], same: ["cart_id"], within_days: 3 },
  holdout_percent: 10,
  steps: [
    { id: "d", delay: { minutes: 90, seconds: 30 } },
    { id: "u", delay_until: { time: "09:30", weekdays: ["mon", "fri"] } },
    { id: "bh", delay_until_best_hour: { time: "10:00" } },
    { id: "tt", delay_until_trait: { trait: "renewal_date", offset_minutes: -1440 } },
    { id: "w", wait_for: { event: "Order Completed", same: ["cart_id"], timeout_minutes: 60, on_event: "x", on_timeout: "b" } },
    {
      id: "b",
      branch: {
        if: { or: [{ computed: { name: "orders", op: "gte", value: 2 } }, { tag: "vip" }] },
        then: "s",
        else: "sp",
      },
    },
    { id: "sp", split: { branches: [{ weight: 70, next: "m" }, { weight: 30 }] } },
    { id: "m", send: { channel: "whatsapp", template: { template_name: "cart", language: "en", params: ["a"] }, category: "transactional", subscription: "carts" } },
    { id: "s", send: { channel: "email", template: { subject: "Hi", body: "B", html: "<p>B</p>" }, category: "marketing" } },
    { id: "t", update_trait: { name: "contacted", value: "42" } },
    { id: "t2", update_trait: { name: "score", value: { a: [1, true] } } },
    { id: "at", add_tag: "engaged" },
    { id: "rt", remove_tag: "cold", next: "x" },
    { id: "h", webhook: { url: "http://127.0.0.1:9/hook", body: "{\"id\": \"{{ person.id }}\"}" } },
    { id: "x", exit: {} },
  ],
};

test("every part of a saved definition reads into the canvas and back unchanged", () => {
  expect(unsupported(EVERYTHING)).toEqual([]);
  const d = fromDefinition("all", "All", EVERYTHING);
  const back = definition(d) as typeof EVERYTHING;
  // The delay is written in minutes (and the seconds left over): the same wait.
  expect(back.steps[0]).toEqual({ id: "d", delay: { seconds: 30, minutes: 90 } });
  expect(back).toEqual(EVERYTHING);
  for (const trigger of [{ segment_entered: "vip" }, { segment_exited: "vip" }, { tag_added: "a" }, { tag_removed: "a" }, { schedule: { cron: "0 9 * * MON", segment: "s" } }, { schedule: { cron: "0 9 * * *" } }, { api: {} }]) {
    const def = { trigger, reentry: "once", holdout_percent: 0, steps: [{ id: "x", exit: {} }] };
    expect(unsupported(def)).toEqual([]);
    expect(definition(fromDefinition("t", "T", def))).toEqual(def);
  }
  // A stored delay of hours and days reads as minutes.
  expect(fromDefinition("t", "T", { trigger: { api: {} }, steps: [{ id: "d", delay: { seconds: 0, minutes: 0, hours: 2, days: 1 } }] }).steps[0].minutes).toBe(1560);
});

test("arrows follow the order unless a step says where; each exit of a branch, split or wait has its own", () => {
  const a = newStep("delay", []);
  const b = newStep("exit", [a.id]);
  const c = newStep("add_tag", [a.id, b.id]);
  const d = newDraft({ trigger: "x", goal: "", steps: [{ ...a, next: c.id }, b, c] });
  expect(edges(d)).toEqual([
    { source: "trigger", target: a.id },
    { source: a.id, sourceHandle: "next", target: c.id },
  ]);
  expect(newStep("delay", ["delay-1", "delay-2"]).id).toBe("delay-3");
  const br = newStep("branch", []);
  const mail = newStep("send", []);
  const tag = newStep("add_tag", []);
  let g = newDraft({ steps: [br, mail, tag] });
  // Both exits go on to the next step until one is connected elsewhere.
  expect(edges(g).filter((e) => e.source === br.id)).toEqual([
    { source: br.id, sourceHandle: "then", target: mail.id, label: "yes" },
    { source: br.id, sourceHandle: "else", target: mail.id, label: "no" },
  ]);
  g = connect(g, br.id, "else", tag.id);
  expect((definition(g).steps as { branch?: object }[])[0].branch).toEqual({
    if: { computed: { name: "orders", op: "gte", value: 1 } },
    else: tag.id,
  });
  // Removing a step drops the arrows that pointed at it.
  expect(edges(removeStep(g, tag.id)).filter((e) => e.source === br.id).map((e) => e.target)).toEqual([mail.id, mail.id]);
  const split = { ...newStep("split", []), weights: [1, 3] };
  expect(edges(newDraft({ steps: [split, mail] })).slice(1).map((e) => e.label)).toEqual(["A 25%", "B 75%"]);
});

test("a fresh canvas lays steps out in rows from the trigger, a branch's exits side by side", () => {
  const d = fromDefinition("w", "W", {
    trigger: { api: {} },
    steps: [
      { id: "b", branch: { if: { tag: "vip" }, then: "yes", else: "no" } },
      { id: "yes", add_tag: "vip-seen", next: "end" },
      { id: "no", exit: {} },
      { id: "end", exit: {} },
      { id: "orphan", exit: {} },
    ],
  });
  const at = placed(d, 100, 10);
  expect(at.trigger).toEqual({ x: 200, y: 0 });
  expect(at.b).toEqual({ x: 200, y: 10 });
  expect([at.yes, at.no]).toEqual([{ x: 150, y: 20 }, { x: 250, y: 20 }]);
  expect(at.end).toEqual({ x: 200, y: 30 });
  expect(at.orphan).toEqual({ x: 200, y: 40 });
});

test("a definition with what the canvas cannot edit is named, so it opens read only", () => {
  const d = newDraft({ trigger: "x", goal: "y", steps: [newStep("wait_for", []), newStep("send", ["wait_for-1"])] });
  expect(unsupported(definition(d))).toEqual([]);
  expect(
    unsupported({
      trigger: { segment_entered: "vip", tag_added: "x" },
      something: 1,
      steps: [{ id: "b", branch: { if: { and: [{ or: [{ tag: "a" }] }, { tag: "b" }] }, then: "x" } }, { id: "q", teleport: {} }],
    }),
  ).toEqual(["something", "this trigger", "step b's condition", "step q (teleport)"]);
});

test("a line diff keeps what is common and marks what was removed and added", () => {
  const a = ["{", '  "wait": 30,', '  "send": "email"', "}"].join("\n");
  const b = ["{", '  "wait": 45,', '  "send": "email",', '  "goal": "Order"', "}"].join("\n");
  const d = lineDiff(a, b);
  // Applying the diff to `a` gives `b`; dropping the additions gives `a`.
  expect(d.filter((l) => l.op !== "-").map((l) => l.text).join("\n")).toBe(b);
  expect(d.filter((l) => l.op !== "+").map((l) => l.text).join("\n")).toBe(a);
  expect(d.filter((l) => l.op === " ").map((l) => l.text)).toEqual(["{", "}"]);
  expect(lineDiff(a, a).every((l) => l.op === " ")).toBe(true);
});

test("a line diff of random texts always rebuilds both sides", () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let n = 0; n < 200; n++) {
    const lines = (k: number) => Array.from({ length: k }, () => "abcde"[Math.floor(rnd() * 5)]).join("\n");
    const a = lines(Math.floor(rnd() * 12));
    const b = lines(Math.floor(rnd() * 12));
    const d = lineDiff(a, b);
    expect(d.filter((l) => l.op !== "-").map((l) => l.text).join("\n")).toBe(b);
    expect(d.filter((l) => l.op !== "+").map((l) => l.text).join("\n")).toBe(a);
  }
});
