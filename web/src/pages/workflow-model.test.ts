import { definition, edges, fromDefinition, lineDiff, newStep, unsupported, type Draft } from "./workflow-model";

test("a canvas draft becomes the API's definition, and reads back the same", () => {
  const wait = { ...newStep("wait_for", []), minutes: 45 };
  const mail = newStep("send", [wait.id]);
  const d: Draft = { id: "cart", name: "Cart", trigger: "Product Added", goal: "Order Completed", steps: [wait, mail] };
  const def = definition(d);
  expect(def).toEqual({
    trigger: { event: { name: "Product Added" } },
    goal: { event: "Order Completed", within_days: 7 },
    steps: [
      { id: "wait_for-1", wait_for: { event: "Order Completed", timeout_minutes: 45 } },
      { id: "send-1", send: { channel: "email", template: { subject: mail.subject, body: mail.body } } },
    ],
  });
  const back = fromDefinition("cart", "Cart", def);
  expect(definition(back)).toEqual(def);
});

test("arrows follow the order unless a step says next; exit ends", () => {
  const a = newStep("delay", []);
  const b = newStep("exit", [a.id]);
  const c = newStep("add_tag", [a.id, b.id]);
  const d: Draft = { id: "", name: "", trigger: "x", goal: "", steps: [{ ...a, next: c.id }, b, c] };
  expect(edges(d)).toEqual([
    { source: "trigger", target: a.id },
    { source: a.id, target: c.id },
  ]);
  expect(newStep("delay", ["delay-1", "delay-2"]).id).toBe("delay-3");
});

test("a definition with what the canvas cannot edit is named, so it opens read only", () => {
  const d: Draft = { id: "", name: "", trigger: "x", goal: "y", steps: [newStep("wait_for", []), newStep("send", ["wait_for-1"])] };
  expect(unsupported(definition(d))).toEqual([]);
  expect(
    unsupported({
      trigger: { segment_entered: "vip" },
      reentry: "once",
      steps: [{ id: "b", branch: { if: {}, then: "x" } }, { id: "w", wait_for: { event: "e", same: ["cart_id"] } }],
    }),
  ).toEqual(["reentry", "a trigger other than an event", "step b (branch)", "step w's wait options"]);
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
