import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { funnelQuery } from "./Funnels";
import { lookup, personKey } from "./person-id";
import { ranges } from "./Overview";
import { Login } from "./Login";
import { AuthProvider } from "../auth";

test("a funnel form becomes the query API's funnel", () => {
  const q = funnelQuery(
    { steps: [" Product Viewed", "Order Completed"], windowSeconds: 86_400, order: "strict", days: 7, breakdown: "category" },
    new Date("2026-03-10T15:00:00Z"),
  );
  expect(q).toEqual({
    kind: "funnel",
    from: "2026-03-04T00:00:00.000Z",
    to: "2026-03-11T00:00:00.000Z",
    window_seconds: 86_400,
    order: "strict",
    steps: [{ event: "Product Viewed" }, { event: "Order Completed" }],
    breakdown: { property: "category", attribution: "first_touch", limit: 5 },
  });
  expect(funnelQuery({ steps: ["a", "b"], windowSeconds: 60, order: "any", days: 30, breakdown: " " }, new Date())).not.toHaveProperty("breakdown");
});

test("persons in URLs are keys of their identifiers", () => {
  expect(personKey({ user_id: ["ann"], anonymous_id: ["x"] })).toBe("u:ann");
  expect(personKey({ anonymous_id: ["x"] })).toBe("a:x");
  expect(personKey({})).toBeNull();
  expect(lookup("u:ann")).toEqual({ id: "ann" });
  expect(lookup("a:x")).toEqual({ id: "x", by: "anonymous_id" });
});

test("the overview compares the last 30 whole days with the 30 before", () => {
  const r = ranges(new Date("2026-03-10T15:00:00Z"));
  expect(r.current.map((d) => d.toISOString())).toEqual(["2026-02-09T00:00:00.000Z", "2026-03-11T00:00:00.000Z"]);
  expect(r.previous[0].toISOString()).toBe("2026-01-10T00:00:00.000Z");
});

test("signing in with a wrong password says so", async () => {
  const fetch = vi.fn(async (input: RequestInfo | URL) => {
    const url = input instanceof Request ? input.url : String(input);
    if (url.endsWith("/api/v1/auth/login")) {
      return new Response(JSON.stringify({ code: "invalid_credentials", message: "invalid email or password" }), {
        status: 401,
        headers: { "content-type": "application/json" },
      });
    }
    return new Response("{}", { status: 404, headers: { "content-type": "application/json" } });
  });
  vi.stubGlobal("fetch", fetch);
  render(
    <AuthProvider>
      <Login />
    </AuthProvider>,
  );
  await userEvent.type(screen.getByLabelText("Email"), "ann@example.com");
  await userEvent.type(screen.getByLabelText("Password"), "wrong");
  await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
  expect(await screen.findByRole("alert")).toHaveTextContent("That email and password do not match.");
  vi.unstubAllGlobals();
});
