import { condition, rulesOf, type Rule } from "../components/Rules";

const rule = (r: Partial<Rule>): Rule => ({ kind: "computed", name: "orders", op: "gte", value: "3", times: 1, days: 30, ...r });

test("builder rules become the API's condition", () => {
  expect(condition([rule({})], "and")).toEqual({ computed: { name: "orders", op: "gte", value: 3 } });
  expect(
    condition(
      [
        rule({ kind: "trait", name: "country", op: "equals", value: "US" }),
        rule({ kind: "performed", name: "Order Completed", times: 2, days: 14 }),
        rule({ kind: "not_performed", name: "Order Refunded", days: 90 }),
        rule({ kind: "trait", name: "email", op: "exists" }),
      ],
      "or",
    ),
  ).toEqual({
    or: [
      { trait: { name: "country", op: "equals", value: "US" } },
      { performed: { event: "Order Completed", count: { op: "at_least", value: 2 }, within_days: 14 } },
      { not: { performed: { event: "Order Refunded", count: { op: "at_least", value: 1 }, within_days: 90 } } },
      { trait: { name: "email", op: "exists" } },
    ],
  });
});

test("a condition of rules reads back as the same rules; one they cannot show gives null", () => {
  const rules = [
    rule({ kind: "trait", name: "country", op: "equals", value: "US" }),
    rule({ kind: "performed", name: "Order Completed", times: 2, days: 14 }),
    rule({ kind: "not_performed", name: "Order Refunded", days: 90 }),
    rule({ kind: "trait", name: "email", op: "exists", value: "" }),
    rule({ kind: "tag", name: "vip" }),
    rule({ kind: "in_segment", name: "seg-1" }),
  ];
  for (const match of ["and", "or"] as const) {
    const c = condition(rules, match);
    const back = rulesOf(c);
    expect(back?.match).toBe(match);
    expect(condition(back?.rules ?? [], match)).toEqual(c);
  }
  expect(rulesOf(condition([rule({})], "and"))?.rules).toEqual([{ ...rule({}), times: 1, days: 30 }]);
  // Nesting, filters, other counts and texts that read as numbers are not rules.
  expect(rulesOf({ and: [{ or: [{ tag: "a" }, { tag: "b" }] }, { tag: "c" }] })).toBeNull();
  expect(rulesOf({ performed: { event: "x", where: [{ property: "p", op: "exists" }], count: { op: "at_least", value: 1 }, within_days: 3 } })).toBeNull();
  expect(rulesOf({ performed: { event: "x", count: { op: "at_most", value: 1 }, within_days: 3 } })).toBeNull();
  expect(rulesOf({ trait: { name: "zip", op: "equals", value: "007" } })).toBeNull();
  expect(rulesOf({ not_followed_by: { event: "a" } })).toBeNull();
});

import { messageTotals } from "./Campaigns";

test("a campaign's messages are summed over its steps", () => {
  expect(messageTotals({ steps: { a: { sent: 3, failed: 1 }, b: { sent: 2, blocked: 4 } } })).toEqual({ sent: 5, blocked: 4, failed: 1 });
  expect(messageTotals({})).toEqual({ sent: 0, blocked: 0, failed: 0 });
});

import { STARTER, ranged } from "./Dashboards";

test("a widget's query is charted over its last days, up to the end of today", () => {
  const now = new Date("2026-03-10T15:00:00Z");
  const [kpi, , , retention] = STARTER.widgets;
  expect(ranged(kpi, now)).toEqual({
    kind: "commerce",
    interval: "day",
    from: "2026-02-09T00:00:00.000Z",
    to: "2026-03-11T00:00:00.000Z",
  });
  // Retention counts periods from `from`.
  expect(ranged(retention, now)).toMatchObject({ from: "2026-01-14T00:00:00.000Z" });
  expect(ranged(retention, now)).not.toHaveProperty("to");
  expect(STARTER.layout.map((l) => l.i)).toEqual(STARTER.widgets.map((w) => w.id));
});
