// End-to-end tests of the dashboard in Chromium, against a running `livora demo`
// (scripts/e2e.sh starts it). Each check prints a line; the first failure stops the run
// with a non-zero exit. Screenshots of every page are written to --out.
//
//   node e2e/run.mjs --url http://127.0.0.1:PORT --data-dir DIR --chromium /usr/bin/chromium --out DIR [--bench]
import { mkdirSync, readFileSync, existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]?.startsWith("--") ? true : (all[i + 1] ?? true)]);
    return acc;
  }, []),
);
const URL_ = args.url;
const OUT = args.out ?? "e2e-artifacts";
mkdirSync(OUT, { recursive: true });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

async function eventually(f, what, ms = 60_000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out: ${what}${last ? ` (${last.message})` : ""}`);
    await sleep(250);
  }
}

async function api(path, { token, method = "GET", body } = {}) {
  const r = await fetch(URL_ + path, {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: r.status, json, text };
}

// --- the server and its demo data --------------------------------------------------------
const accounts = await eventually(() => {
  const p = join(args["data-dir"], "demo-accounts.json");
  return existsSync(p) && JSON.parse(readFileSync(p, "utf8"));
}, "the demo's accounts");
const owner = accounts.find((a) => a.role === "owner");
const viewer = accounts.find((a) => a.role === "viewer");
await eventually(async () => (await api("/readyz")).status === 200, "the server is ready");
const ownerToken = (await api("/api/v1/auth/login", { method: "POST", body: { email: owner.email, password: owner.password } })).json.access_token;
check(typeof ownerToken === "string", "the owner signs in through the API");
const banner = readFileSync(join(args["data-dir"], "demo.out"), "utf8");
const writeKey = /write key:\s+(\S+)/.exec(banner)?.[1];
check(!!writeKey, "the demo printed a write key");
// The backfill is in once the order count stops moving.
const ordersNow = async () => {
  const to = new Date(Date.now() + 86_400_000).toISOString();
  const r = await api("/api/v1/query", { token: ownerToken, method: "POST", body: { kind: "commerce", from: "2000-01-01T00:00:00Z", to } });
  return r.json?.totals?.orders ?? 0;
};
let before = -1;
await eventually(async () => {
  const n = await ordersNow();
  const settled = n > 0 && n === before;
  before = n;
  if (!settled) await sleep(1500);
  return settled;
}, "the demo's history is loaded", 240_000);
console.log(`# demo data: ${before} orders`);

const browser = await chromium.launch({
  executablePath: args.chromium,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function signIn(context, who) {
  const page = await context.newPage();
  await page.goto(URL_ + "/");
  await page.getByLabel("Email").fill(who.email);
  await page.getByLabel("Password").fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Pages" }).waitFor();
  return page;
}

/// Text whose contrast with what is behind it is below WCAG AA (4.5:1; 3:1 for large text).
/// Charts (canvas, SVG) and disabled controls are left out.
function lowContrast(page) {
  return page.evaluate(() => {
    const rgba = (c) => {
      const m = c.match(/rgba?\(([^)]+)\)/);
      if (!m) return null;
      const [r, g, b, a = 1] = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return [r, g, b, a];
    };
    const lum = (c) => {
      const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
    };
    const behind = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgba(getComputedStyle(e).backgroundColor);
        if (c && c[3] > 0.5) return c;
      }
      return [255, 255, 255, 1];
    };
    const out = [];
    const seen = new Set();
    const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      const el = n.parentElement;
      if (!el || seen.has(el) || !n.textContent.trim()) continue;
      seen.add(el);
      if (el.closest("svg, canvas, button:disabled, [aria-hidden=true]")) continue;
      const s = getComputedStyle(el);
      const box = el.getBoundingClientRect();
      if (s.visibility === "hidden" || box.width === 0 || box.height === 0) continue;
      const fg = rgba(s.color);
      if (!fg) continue;
      const bg = behind(el);
      const seen_ = fg.slice(0, 3).map((v, i) => v * fg[3] + bg[i] * (1 - fg[3]));
      const [a, b] = [lum(seen_), lum(bg)];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      const size = parseFloat(s.fontSize);
      const large = size >= 24 || (Number(s.fontWeight) >= 700 && size >= 18.66);
      if (ratio < (large ? 3 : 4.5)) out.push(`${el.tagName.toLowerCase()}.${el.className} "${n.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
    }
    return out;
  });
}

/// What every screenshot's page failed of the contrast audit.
const contrast = [];
async function shoot(page, file) {
  await page.screenshot({ path: join(OUT, file), fullPage: true });
  contrast.push(...(await lowContrast(page)).map((x) => `${file}: ${x}`));
}

/// The focused element, as Tab left it.
const focused = (page) =>
  page.evaluate(() => {
    const e = document.activeElement;
    return {
      tag: e?.tagName ?? "",
      text: (e?.textContent ?? "").trim(),
      label: (e?.labels?.[0]?.textContent ?? e?.getAttribute("aria-label") ?? "").trim(),
      outline: e ? getComputedStyle(e).outlineStyle : "none",
    };
  });

/// Presses Tab until `ok` holds of the focused element.
async function tabTo(page, ok, what) {
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press("Tab");
    const f = await focused(page);
    if (ok(f)) return f;
  }
  throw new Error(`FAILED: Tab never reached ${what}`);
}

const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

if (args.bench) {
  await bench();
} else {
  try {
    await run();
  } finally {
    await browser.close();
  }
}

async function run() {
  // --- the owner ---------------------------------------------------------------------------
  const context = await browser.newContext({ locale: "en-US", viewport: { width: 1366, height: 900 } });
  const page = await signIn(context, owner);
  check(true, "the owner signs in on the login page");
  await page.getByTestId("kpi-Orders").waitFor();
  const to = new Date(Math.ceil(Date.now() / 86_400_000) * 86_400_000);
  const from = new Date(to.getTime() - 30 * 86_400_000);
  const c = await api("/api/v1/query", { token: ownerToken, method: "POST", body: { kind: "commerce", from: from.toISOString(), to: to.toISOString(), interval: "day" } });
  check((await page.getByTestId("kpi-Orders").textContent()) === fmt.format(c.json.totals.orders), `the overview shows the API's ${c.json.totals.orders} orders`);
  // The live feed: an event sent now shows up.
  await page.getByText("● live").waitFor();
  const sent = await fetch(URL_ + "/v1/track", {
    method: "POST",
    headers: { Authorization: "Basic " + Buffer.from(writeKey + ":").toString("base64"), "content-type": "application/json" },
    body: JSON.stringify({ userId: "e2e-live", event: "E2E Live Check" }),
  });
  check(sent.status === 200, "an event is sent with the write key");
  await page.getByText("E2E Live Check").waitFor({ timeout: 15_000 });
  check(true, "the live feed shows it");
  await sleep(1500); // the chart's drawing animation
  await shoot(page, "overview.png");

  // Funnels: the numbers on screen are the query API's for the same query.
  await page.getByRole("link", { name: "Funnels" }).click();
  const asked = page.waitForRequest((r) => r.url().endsWith("/api/v1/query") && r.method() === "POST");
  await page.getByRole("button", { name: "Calculate" }).click();
  const body = JSON.parse((await asked).postData());
  await page.getByTestId("step-4-count").waitFor();
  const answer = await api("/api/v1/query", { token: ownerToken, method: "POST", body });
  check(answer.status === 200, "the same funnel through the API");
  for (const [i, s] of answer.json.steps.entries()) {
    const shown = await page.getByTestId(`step-${i + 1}-count`).textContent();
    check(shown === fmt.format(s.count), `step ${i + 1} (${s.event}): ${shown} on screen, ${s.count} from the API`);
  }
  check(answer.json.steps[0].count > answer.json.steps[1].count, "some persons dropped after step 1");
  // The step inputs suggest the tenant's event names (as the API lists them).
  const defs = (await api("/api/v1/events/definitions?days=90", { token: ownerToken })).json;
  const offered = await page.locator("#livora-event-names option").evaluateAll((os) => os.map((o) => o.value));
  check(
    offered.includes("Order Completed") && offered.includes("Product Viewed") && offered.every((n) => defs.events.some((e) => e.name === n)),
    `the step inputs suggest the tenant's event names (${offered.slice(0, 4).join(", ")}, …)`,
  );
  await shoot(page, "funnels.png");
  // Who dropped before step 2, and one of their profiles.
  await page.getByTestId("step-2").getByRole("button").click();
  const dropped = page.getByRole("region", { name: "Dropped persons" });
  await dropped.getByRole("link").first().waitFor();
  const name = await dropped.getByRole("link").first().textContent();
  await dropped.getByRole("link").first().click();
  await page.getByRole("heading", { level: 2, name: "Identities" }).waitFor();
  const droppedUrl = page.url();
  check((await page.content()).includes(name), `the dropped person ${name}'s profile opens`);
  await page.getByRole("heading", { name: "Timeline" }).waitFor();
  await shoot(page, "person.png");

  // Models trained, the profile shows predictions.
  const trainAsked = await api("/api/v1/models/train", { token: ownerToken, method: "POST", body: {} });
  check(trainAsked.status === 202, `a training is queued as a job (${trainAsked.status})`);
  const trainJob = await eventually(async () => {
    const j = await api(`/api/v1/models/train/${trainAsked.json.id}`, { token: ownerToken });
    return ["succeeded", "failed"].includes(j.json?.state) && j.json;
  }, "the training job", 180_000);
  const trained = { json: trainJob.result ?? { skipped: [trainJob.error] } };
  check(trainJob.state === "succeeded", `the models train (skipped: ${JSON.stringify(trained.json.skipped)})`);
  check(trained.json.skipped.length === 0, "the demo's history is enough for every model");
  // A buyer's profile shows the API's churn risk.
  const buyers = await api("/api/v1/people?sort=orders&limit=1", { token: ownerToken });
  const buyer = buyers.json.people[0].identifiers.user_id[0];
  const predicted = await api(`/api/v1/people/${encodeURIComponent(buyer)}/predictions`, { token: ownerToken });
  await page.goto(URL_ + `/people/${encodeURIComponent("u:" + buyer)}`);
  await page.getByTestId("churn-risk").waitFor();
  const risk = new Intl.NumberFormat("en-US", { style: "percent", maximumFractionDigits: 1 }).format(predicted.json.churn_risk);
  const shownRisk = await page.getByTestId("churn-risk").textContent();
  check(shownRisk.startsWith(risk), `the profile shows the API's churn risk ${risk} (${shownRisk})`);
  // Someone with a short history gets recommendations (a top buyer may have seen everything).
  await page.goto(droppedUrl);
  await page.getByRole("list", { name: "Recommended items" }).getByRole("listitem").first().waitFor();
  check(true, "the dropped person's profile recommends items");
  await shoot(page, "person-predictions.png");
  for (const [link, ready, shot] of [
    ["Retention", "Retention by cohort", "retention.png"],
    ["Trends", "Order Completed by day", "trends.png"],
    ["Paths", "Paths around Product Added", "paths.png"],
  ]) {
    await page.getByRole("link", { name: link }).click();
    await page.getByRole("button", { name: "Calculate" }).click();
    await page.getByRole("img", { name: ready }).locator("canvas").waitFor();
    check(true, `${link} draws its chart`);
    await shoot(page, shot);
  }

  await page.getByRole("link", { name: "Overview" }).click();
  await page.getByTestId("kpi-Orders").waitFor();
  await page.getByRole("img", { name: "Daily revenue over the last 30 days and its forecast" }).locator("canvas").waitFor();
  await sleep(1500); // the chart's drawing animation
  check((await page.getByText("The forecast appears once").count()) === 0, "the overview shows the revenue forecast");
  // Who is at risk of churning: the API's figure (a scheduled training may land meanwhile:
  // then the page is read again).
  let atRisk = null;
  await eventually(async () => {
    await page.waitForFunction(() => document.querySelector('[data-testid="kpi-At risk"]')?.textContent !== "…");
    const risk = (await api("/api/v1/predictions/summary", { token: ownerToken })).json.churn;
    if ((await page.getByTestId("kpi-At risk").textContent()) === fmt.format(risk.at_risk)) return (atRisk = risk), true;
    await page.reload();
    return false;
  }, "the churn figure is the API's", 30_000);
  check(atRisk.scored > 0, `the overview shows the API's ${atRisk.at_risk} of ${atRisk.scored} persons at risk of churning`);
  await shoot(page, "overview-forecast.png");
  // Segments: the live count is the API's, and a saved segment is listed with its size.
  await page.getByRole("link", { name: "Segments" }).click();
  await page.getByLabel("Name").fill("E2E loyal buyers");
  await page.getByLabel("Rule 1 operator").selectOption("gte");
  await page.getByLabel("Rule 1 value").fill("3");
  const loyal = { computed: { name: "orders", op: "gte", value: 3 } };
  const expected = (await api("/api/v1/segments/preview", { token: ownerToken, method: "POST", body: { condition: loyal } })).json.count;
  await eventually(async () => (await page.getByTestId("live-count").textContent()).includes(`${fmt.format(expected)} people`), "the live count");
  check(true, `the live count shows the API's ${expected} people`);
  await page.getByRole("button", { name: "Add rule" }).click();
  await page.getByLabel("Rule 2 kind").selectOption("performed");
  await page.getByLabel("Rule 2 days").fill("7");
  const both = { and: [loyal, { performed: { event: "Order Completed", count: { op: "at_least", value: 1 }, within_days: 7 } }] };
  const fewer = (await api("/api/v1/segments/preview", { token: ownerToken, method: "POST", body: { condition: both } })).json.count;
  await eventually(async () => (await page.getByTestId("live-count").textContent()).includes(`${fmt.format(fewer)} people`), "the live count of two rules");
  check(fewer <= expected, `a second rule narrows it to ${fewer}`);
  await page.getByRole("button", { name: "Save segment" }).click();
  await page.getByRole("status").filter({ hasText: "Saved" }).waitFor();
  const row = page.getByRole("table", { name: "Segments" }).getByRole("row", { name: /E2E loyal buyers/ });
  await row.waitFor();
  check(true, "the saved segment is listed");
  await shoot(page, "segments.png");
  // Workflows: an abandoned-cart workflow built on the canvas, saved and enabled.
  await page.getByRole("link", { name: "Workflows" }).click();
  await page.getByRole("button", { name: "New workflow" }).click();
  await page.getByLabel("Workflow name").fill("E2E abandoned cart");
  await page.getByLabel("Trigger event").fill("Product Added");
  await page.getByLabel("Goal event").fill("Order Completed");
  await page.getByRole("button", { name: "+ Wait for event" }).click();
  await page.getByLabel("Name", { exact: true }).fill("Order Completed");
  await page.getByLabel("Minutes").fill("60");
  await page.getByRole("button", { name: "+ Send message" }).click();
  await page.getByLabel("Subject").fill("{{ traits.first_name }}, your cart is waiting");
  await page.getByTestId("node-send-1").waitFor();
  // Drag the email node aside on the canvas.
  const box = await page.getByTestId("node-send-1").boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 + 150, box.y + box.height / 2 + 40, { steps: 8 });
  await page.mouse.up();
  const moved = await page.getByTestId("node-send-1").boundingBox();
  check(Math.abs(moved.x - box.x - 150) < 20, `a node is dragged on the canvas (${JSON.stringify(box)} → ${JSON.stringify(moved)})`);
  // trigger → wait, and both of the wait's exits (it happened, it timed out) → email.
  check((await page.locator(".react-flow__edge").count()) === 3, "the canvas connects trigger → wait → email");
  await page.getByRole("button", { name: "Save version" }).click();
  await page.getByRole("status").filter({ hasText: "Saved version 1." }).waitFor();
  await page.getByRole("button", { name: "Enable" }).click();
  await page.getByRole("status").filter({ hasText: "Enabled version 1." }).waitFor();
  const listed = await api("/api/v1/workflows", { token: ownerToken });
  const made = listed.json.workflows.find((w) => w.name === "E2E abandoned cart");
  check(made?.status === "enabled", "the API has the workflow enabled");
  const full = (await api(`/api/v1/workflows/${made.id}`, { token: ownerToken })).json;
  made.definition = full.definition;
  const steps = made.definition.steps;
  check(
    steps.length === 2 && steps[0].wait_for?.event === "Order Completed" && steps[0].wait_for?.timeout_minutes === 60 &&
      steps[1].send?.template?.subject === "{{ traits.first_name }}, your cart is waiting" &&
      made.definition.trigger.event.name === "Product Added" && made.definition.goal.event === "Order Completed",
    "its definition is what the canvas built",
  );
  await page.getByRole("button", { name: "Backtest 30 days" }).click();
  await page.getByRole("region", { name: "Backtest" }).waitFor();
  check(/would have entered/.test(await page.getByRole("region", { name: "Backtest" }).textContent()), "the backtest reports what it would have done");
  // A second version, and what changed from the first.
  await page.getByLabel("Subject").fill("Your cart misses you");
  await page.getByRole("button", { name: "Save version" }).click();
  await page.getByRole("status").filter({ hasText: "Saved version 2." }).waitFor();
  const versions = page.getByRole("region", { name: "Versions" });
  await versions.getByTestId("version-2").getByRole("button", { name: "Changes from v1" }).click();
  const diff = await versions.getByLabel("Changes in v2").textContent();
  check(
    diff.includes('+   "subject": "Your cart misses you"') || /\+\s+"subject": "Your cart misses you"/.test(diff),
    "the versions list shows what v2 changed",
  );
  check(/-\s+"subject": "\{\{ traits.first_name \}\}, your cart is waiting"/.test(diff), "and what it replaced");
  // A branch on the canvas: tagged VIPs get a tag, the others leave; its "no" exit is
  // dragged onto the exit node.
  await page.getByRole("button", { name: "+ Branch" }).click();
  const condition = page.getByRole("group", { name: "Condition" });
  await condition.getByLabel("Rule 1 kind").selectOption("tag");
  await condition.getByLabel("Rule 1 tag").fill("vip");
  await page.getByRole("button", { name: "+ Add tag" }).click();
  await page.getByLabel("Name", { exact: true }).fill("vip-cart");
  await page.getByRole("button", { name: "+ Exit" }).click();
  await page.getByTestId("node-exit-1").waitFor();
  await sleep(500); // the canvas fits its new view
  const noExit = await page.locator('.react-flow__node[data-id="branch-1"] .react-flow__handle[data-handleid="else"]').boundingBox();
  const exitIn = await page.locator('.react-flow__node[data-id="exit-1"] .react-flow__handle.target').boundingBox();
  await page.mouse.move(noExit.x + noExit.width / 2, noExit.y + noExit.height / 2);
  await page.mouse.down();
  await page.mouse.move(exitIn.x + exitIn.width / 2, exitIn.y + exitIn.height / 2, { steps: 10 });
  await page.mouse.up();
  await page.locator('.react-flow__edge[data-id="branch-1:else->exit-1"]').waitFor();
  check(true, "the branch's no exit is connected to the exit on the canvas");
  await page.getByRole("button", { name: "Save version" }).click();
  await page.getByRole("status").filter({ hasText: "Saved version 3." }).waitFor();
  const v3 = (await api(`/api/v1/workflows/${made.id}`, { token: ownerToken })).json.definition.steps;
  const branch = v3.find((x) => x.id === "branch-1")?.branch;
  check(
    branch?.if?.tag === "vip" && branch.else === "exit-1" && !branch.then && v3.find((x) => x.id === "add_tag-1")?.add_tag === "vip-cart",
    `the API has the branch the canvas built (${JSON.stringify(branch)})`,
  );
  // A definition made through the API with every kind of step opens editable, and saving it
  // from the canvas changes nothing.
  const rich = {
    trigger: { event: { name: "Product Added", where: [{ property: "price", op: "gt", value: 10 }] } },
    reentry: { after_days: 14 },
    goal: { event: "Order Completed", same: ["cart_id"], within_days: 3 },
    holdout_percent: 10,
    steps: [
      { id: "d", delay: { minutes: 90 } },
      { id: "u", delay_until: { time: "09:30", weekdays: ["mon", "fri"] } },
      { id: "bh", delay_until_best_hour: { time: "10:00" } },
      { id: "w", wait_for: { event: "Order Completed", same: ["cart_id"], timeout_minutes: 60, on_event: "x", on_timeout: "b" } },
      { id: "b", branch: { if: { or: [{ computed: { name: "orders", op: "gte", value: 2 } }, { tag: "vip" }] }, then: "s", else: "sp" } },
      { id: "sp", split: { branches: [{ weight: 70, next: "t" }, { weight: 30 }] } },
      { id: "s", send: { channel: "email", template: { subject: "Hi {{ traits.first_name }}", body: "Come back", html: "<p>Come back</p>" }, category: "marketing" } },
      { id: "t", update_trait: { name: "contacted", value: true } },
      { id: "rt", remove_tag: "cold" },
      { id: "x", exit: {} },
    ],
  };
  const created = await api("/api/v1/workflows", { token: ownerToken, method: "POST", body: { id: "e2e-rich", name: "E2E every step", definition: rich } });
  check(created.status === 201 || created.status === 200, `a workflow with every kind of step is made through the API (${created.status} ${JSON.stringify(created.json).slice(0, 200)})`);
  await page.reload(); // the list shows what the API made since
  await page.getByRole("table", { name: "Workflows" }).getByRole("row", { name: /E2E every step/ }).getByRole("button", { name: "Open" }).click();
  await page.getByTestId("node-sp").waitFor();
  check((await page.getByRole("note").filter({ hasText: "Read only" }).count()) === 0, "it opens editable on the canvas");
  await eventually(async () => (await page.locator(".react-flow__edge").count()) === 13, "an arrow for each exit", 10_000);
  check(true, "with an arrow for each exit (13)");
  await page.getByTestId("node-b").click();
  check((await page.getByRole("group", { name: "Condition" }).getByLabel("Rule 2 tag").inputValue()) === "vip", "the branch's condition is in the side panel");
  await page.getByRole("button", { name: "Save version" }).click();
  await page.getByRole("status").filter({ hasText: "Saved version 2." }).waitFor();
  const richVersions = (await api("/api/v1/workflows/e2e-rich/versions", { token: ownerToken })).json.versions;
  check(
    JSON.stringify(richVersions[1].definition) === JSON.stringify(richVersions[0].definition),
    "saved from the canvas, it is the same definition",
  );
  await page.getByRole("region", { name: "Dead letters" }).waitFor();
  check(true, "the workflow shows its dead letters (or that there are none)");
  await shoot(page, "workflows.png");
  // A custom dashboard: rearranged, and still so after a reload.
  await page.getByRole("link", { name: "Dashboards" }).click();
  await page.getByText("No dashboards yet").waitFor();
  await page.getByRole("button", { name: "New dashboard" }).click();
  for (const id of ["orders", "revenue", "checkout", "retention"]) await page.getByTestId(`widget-${id}`).waitFor();
  await page.getByTestId("widget-revenue").locator("canvas").waitFor();
  check(true, "a new dashboard shows its four widgets");
  const before = await page.getByTestId("widget-orders").boundingBox();
  const handle = await page.getByTestId("widget-orders").getByRole("heading").boundingBox();
  const saved = page.waitForResponse((r) => r.url().includes("/api/v1/dashboards/") && r.request().method() === "PUT");
  await page.mouse.move(handle.x + 20, handle.y + handle.height / 2);
  await page.mouse.down();
  // Down below the others: the orders widget moves to the bottom of the grid.
  await page.mouse.move(handle.x + 40, handle.y + 700, { steps: 20 });
  await page.mouse.up();
  check((await saved).status() === 200, "the new layout is saved");
  await sleep(800); // the grid's move transition
  // Where it is on the page (the drag may have scrolled it).
  const at = () =>
    page.getByTestId("widget-orders").evaluate((el) => {
      const r = el.getBoundingClientRect();
      return { x: Math.round(r.left + window.scrollX), y: Math.round(r.top + window.scrollY) };
    });
  const after = await at();
  check(after.y > before.y + 200, `the widget moved (${Math.round(before.y)} → ${Math.round(after.y)})`);
  await page.reload();
  await page.getByTestId("widget-orders").waitFor();
  await page.getByTestId("widget-revenue").locator("canvas").waitFor();
  await sleep(500);
  const reloaded = await at();
  check(Math.abs(reloaded.y - after.y) < 5 && Math.abs(reloaded.x - after.x) < 5, `after a reload the dashboard is as it was left (${JSON.stringify(after)} → ${JSON.stringify(reloaded)})`);
  // An insight added to that dashboard from its own page, then drawn there.
  await page.getByRole("link", { name: "Trends" }).click();
  await page.getByRole("button", { name: "Calculate" }).click();
  await page.getByRole("img", { name: "Order Completed by day" }).locator("canvas").waitFor();
  await page.getByRole("button", { name: "Add to My dashboard" }).click();
  await page.getByRole("status").filter({ hasText: "Added to My dashboard" }).waitFor();
  const boards = (await api("/api/v1/dashboards", { token: ownerToken })).json.dashboards;
  const trend = boards[0].widgets.find((w) => w.kind === "trends" && w.id.startsWith("trends-"));
  check(trend?.query.event.event === "Order Completed" && trend.days === 30 && !("from" in trend.query), `a trend is added to the dashboard from its page (${JSON.stringify(trend)})`);
  await page.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "Dashboards" }).click();
  await page.getByTestId(`widget-${trend.id}`).locator("canvas").waitFor();
  check(true, "and the dashboard draws it");
  await shoot(page, "dashboards.png");
  await page.getByRole("link", { name: "Campaigns" }).click();
  await page.getByRole("table", { name: "Campaigns" }).or(page.getByText("No workflows yet.")).waitFor();
  check(true, "the campaigns page shows its workflows (or that there are none)");
  await shoot(page, "campaigns.png");
  await page.getByRole("link", { name: "People" }).click();
  await page.getByRole("table", { name: "People" }).waitFor();
  await shoot(page, "people.png");
  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByRole("table", { name: "Members" }).waitFor();
  check((await page.getByRole("table", { name: "Members" }).textContent()).includes(viewer.email), "settings list the members");
  // A member invited; a key made, shown once, working, then revoked after confirming.
  await page.locator(`form[aria-label="Invite a member"]`).getByLabel("Email").fill("e2e-new@demo.livora.test");
  await page.locator(`form[aria-label="Invite a member"]`).getByLabel("Role").selectOption("analyst");
  await page.getByRole("button", { name: "Invite" }).click();
  await page.getByTestId("invitation").waitFor();
  // Members are listed once they accept; the invitation is for passing on.
  check((await page.getByTestId("invitation").textContent()).length > 20, "a member is invited from settings (an invitation token to pass on)");
  await page.getByLabel("Kind").selectOption({ label: "Secret key: read" });
  await page.getByRole("button", { name: "Create key" }).click();
  const newKey = await page.getByTestId("new-key").textContent();
  check((await api("/api/v1/segments", { token: newKey })).status === 200, "the key made in settings works");
  const keys = (await api("/api/v1/keys", { token: ownerToken })).json.keys;
  const madeKey = keys.find((k) => newKey.startsWith(k.prefix) && !k.revoked_at);
  const keyRow = page.getByTestId(`key-${madeKey.prefix}`);
  await keyRow.getByRole("button", { name: "Revoke…" }).click();
  await keyRow.getByRole("alertdialog", { name: "Confirm revoking" }).getByRole("button", { name: "Revoke" }).click();
  await keyRow.getByText("revoked").waitFor();
  check((await api("/api/v1/segments", { token: newKey })).status === 401, "revoked after confirming, it no longer works");
  // A channel configured (its secret never shown again), the delivery policy changed.
  const channelForm = page.locator(`form[aria-label="Configure a channel"]`);
  await channelForm.getByLabel("Channel").selectOption("webhook");
  await channelForm.getByLabel("Signing secret").fill("e2e-signing-secret-0123456789");
  await channelForm.getByRole("button", { name: "Save webhook" }).click();
  await page.getByTestId("channel-webhook").waitFor();
  const channels = (await api("/api/v1/channels", { token: ownerToken })).json.channels;
  check(channels.webhook?.provider === "webhook", "a webhook channel is configured from settings");
  check(!(await page.content()).includes("e2e-signing-secret"), "its secret is not shown again");
  const policyForm = page.locator(`form[aria-label="Delivery policy"]`);
  await policyForm.getByLabel("Use the server's defaults").uncheck();
  await policyForm.getByLabel("Frequency cap").fill("3");
  await policyForm.getByRole("group", { name: "Marketing needs an opt-in on" }).getByLabel("email").check();
  await policyForm.getByRole("button", { name: "Save policy" }).click();
  await page.getByRole("status").filter({ hasText: "Saved." }).waitFor();
  const policy = (await api("/api/v1/tenant", { token: ownerToken })).json.delivery_policy;
  check(policy?.frequency_cap === 3 && policy.opt_in.includes("email"), `the tenant's delivery policy is saved (${JSON.stringify(policy)})`);
  // A person's data: exported to a file, then erased after typing their id.
  // The dropped person may be known only by an anonymous id (the profile's URL says which).
  const personData = page.getByRole("region", { name: "A person's data" });
  const anonymousId = decodeURIComponent(droppedUrl).includes("/people/a:");
  await personData.getByLabel("Id is").selectOption(anonymousId ? "anonymous" : "user");
  await personData.getByLabel("Id", { exact: true }).fill(name);
  const [download] = await Promise.all([page.waitForEvent("download"), personData.getByRole("button", { name: "Export" }).click()]);
  const exported = JSON.parse(readFileSync(await download.path(), "utf8"));
  check(exported.events.length > 0 && exported.person.id === name, `${name}'s data is exported (${exported.events.length} events)`);
  await personData.getByRole("button", { name: "Erase…" }).click();
  const confirmErase = page.getByRole("alertdialog", { name: "Confirm erasing" });
  check(await confirmErase.getByRole("button", { name: "Erase for good" }).isDisabled(), "erasing waits for the id to be typed");
  await confirmErase.getByLabel("Type the id to confirm").fill(name);
  await confirmErase.getByRole("button", { name: "Erase for good" }).click();
  await page.getByTestId("erased").waitFor();
  const audit = (await api("/api/v1/audit?limit=50", { token: ownerToken })).json.entries;
  // The audit log names the erased person in a form the erasure made unreadable (issue 22).
  const erasures = audit.filter((e) => e.action === "person.erase");
  check(erasures.length > 0 && erasures.every((e) => !String(e.target).includes(name)), `${name} is erased after confirming, and the audit log no longer reads their id (${erasures[0]?.target?.slice(0, 12)}…)`);
  await shoot(page, "settings.png");
  // A tablet's width: the navigation moves on top, nothing overflows sideways.
  await page.setViewportSize({ width: 800, height: 1000 });
  await page.getByRole("link", { name: "Overview" }).click();
  await page.getByTestId("kpi-Orders").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no sideways scrolling at tablet width (${overflow}px)`);
  await shoot(page, "overview-tablet.png");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
  check(true, "signing out returns to the login page");
  await context.close();

  // --- a viewer: personal data masked, no settings -------------------------------------------
  const vc = await browser.newContext({ locale: "en-US", viewport: { width: 1366, height: 900 } });
  // The viewer works with the keyboard alone: sign in, open a page, run a funnel.
  const v = await vc.newPage();
  await v.goto(URL_ + "/");
  await v.getByLabel("Email").waitFor();
  await tabTo(v, (f) => f.tag === "INPUT" && f.label.startsWith("Email"), "the email field");
  await v.keyboard.type(viewer.email);
  await v.keyboard.press("Tab");
  await v.keyboard.type(viewer.password);
  await v.keyboard.press("Enter");
  await v.getByRole("navigation", { name: "Pages" }).waitFor();
  check(true, "the viewer signs in with the keyboard alone");
  const nav = await v.getByRole("navigation", { name: "Pages" }).textContent();
  check(nav.includes("Overview") && nav.includes("Funnels"), "the viewer sees the analytics pages");
  check(nav.includes("People") && !nav.includes("Settings"), "the viewer's navigation has People (masked) but no Settings");
  const link = await tabTo(v, (f) => f.tag === "A" && f.text === "Funnels", "the Funnels link");
  check(link.outline !== "none", `the focused link shows it (${link.outline} outline)`);
  await v.keyboard.press("Enter");
  await v.getByRole("heading", { level: 1, name: "Funnels" }).waitFor();
  await tabTo(v, (f) => f.tag === "BUTTON" && f.text === "Calculate", "the Calculate button");
  await v.keyboard.press("Enter");
  await v.getByTestId("step-2-count").waitFor();
  check(true, "and runs a funnel with Tab and Enter");
  check((await v.getByTestId("step-2").getByRole("button").count()) === 0, "the viewer cannot list who dropped");
  await v.getByRole("link", { name: "Segments" }).click();
  await v.getByRole("table", { name: "Segments" }).waitFor();
  check((await v.locator(`form[aria-label="New segment"]`).count()) === 0, "the viewer sees segments but cannot build one");
  await v.goto(URL_ + "/settings");
  await v.getByText("Your role does not open this page.").waitFor();
  check(true, "the viewer cannot open settings");
  // People, masked: the owner's list of the same people shows what the viewer must not see.
  const viewerToken = (await api("/api/v1/auth/login", { method: "POST", body: { email: viewer.email, password: viewer.password } })).json.access_token;
  const clear = (await api("/api/v1/people?limit=50", { token: ownerToken })).json.people;
  const secrets = clear.flatMap((p) => [p.traits?.email, p.traits?.name, ...(p.identifiers?.user_id ?? [])]).filter((x) => typeof x === "string" && x.length > 3);
  await v.getByRole("navigation", { name: "Pages" }).getByRole("link", { name: "People" }).click();
  await v.getByRole("table", { name: "People" }).waitFor();
  const peopleText = await v.getByRole("table", { name: "People" }).textContent();
  check(secrets.length > 0 && secrets.every((x) => !peopleText.includes(x)) && peopleText.includes("•••"), `the viewer sees people masked (none of ${secrets.length} emails, names and ids)`);
  check((await v.getByRole("search").getByRole("searchbox").count()) === 0, "and cannot search them");
  await v.getByRole("table", { name: "People" }).getByRole("link").first().click();
  await v.getByRole("heading", { level: 2, name: "Identities" }).waitFor();
  await v.getByText("Events are personal data").waitFor();
  const profile = await v.locator("main").textContent();
  check(secrets.every((x) => !profile.includes(x)) && profile.includes("•••"), "a masked profile opens, without its events");
  await shoot(v, "viewer-person.png");
  const masked = await api("/api/v1/people?limit=5", { token: viewerToken });
  check(masked.status === 200 && masked.json.people.every((p) => p.masked) && secrets.every((x) => !JSON.stringify(masked.json).includes(x)), "the API masks them for the viewer too");
  const search = await api(`/api/v1/people?q=${encodeURIComponent(secrets[0])}`, { token: viewerToken });
  const byId = await api(`/api/v1/people/${encodeURIComponent(clear[0].identifiers?.user_id?.[0] ?? "x")}`, { token: viewerToken });
  const events = await api(`/api/v1/people/${clear[0].id}/timeline?by=person`, { token: viewerToken });
  check(search.status === 403 && byId.status === 403 && events.status === 403, "and refuses searching, lookups by identifier and events");
  await shoot(v, "viewer-settings.png");
  await vc.close();
  check(contrast.length === 0, `every page's text meets WCAG AA contrast${contrast.length ? `: ${contrast.slice(0, 12).join("; ")}` : ""}`);
  console.log(`# screenshots in ${OUT}`);
}

// --- first load: time to interactive and bundle size ----------------------------------------
async function bench() {
  const runs = Number(args.runs ?? 7);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const context = await browser.newContext({ locale: "en-US" });
    const page = await signIn(context, owner);
    // Cold: a new context has no cache; sign-in kept the session in sessionStorage.
    const t0 = Date.now();
    await page.reload();
    await page.getByTestId("kpi-Orders").waitFor();
    await page.locator("canvas").first().waitFor();
    times.push(Date.now() - t0);
    await context.close();
  }
  await browser.close();
  times.sort((a, b) => a - b);
  const dir = new URL("../../crates/server/dashboard/", import.meta.url).pathname;
  const html = readFileSync(join(dir, "index.html"), "utf8");
  const first = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+)"/g)].map((m) => m[1]);
  const echarts = readdirSync(join(dir, "assets")).filter((f) => /^echarts-.*\.js$/.test(f)).map((f) => `assets/${f}`);
  const gz = (files) => files.reduce((n, f) => n + gzipSync(readFileSync(join(dir, f)), { level: 9 }).length, 0);
  const all = readdirSync(join(dir, "assets")).map((f) => `assets/${f}`);
  console.log(JSON.stringify({
    runs,
    overview_interactive_ms: { median: times[Math.floor(runs / 2)], min: times[0], max: times[runs - 1] },
    first_load_gzip_bytes: gz(first),
    overview_with_charts_gzip_bytes: gz([...new Set([...first, ...echarts])]),
    all_assets_gzip_bytes: gz(all),
  }, null, 2));
}
