import { suggested } from "./Suggestions";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { ApiError } from "../api/client";
import { ChurnKpi, Kpi } from "../pages/Overview";
import { fromProfile } from "../pages/Person";
import { parseSse } from "./LiveFeed";
import { Empty, ErrorState, Loaded, Loading } from "./States";

test("a KPI shows its value and the change against the previous period", () => {
  render(<Kpi label="Revenue" value="$1,200" delta={0.25} />);
  expect(screen.getByRole("group", { name: "Revenue" })).toHaveTextContent("$1,200");
  expect(screen.getByText(/▲ 25%/)).toHaveClass("up");
  render(<Kpi label="Orders" value="3" delta={-0.5} />);
  expect(screen.getByText(/▼ 50%/)).toHaveClass("down");
  render(<Kpi label="Visitors" value="3" delta={null} />);
  expect(screen.getByText("no earlier data")).toBeInTheDocument();
});

test("the loading, empty and error states say what happens, and errors can be retried", async () => {
  const retry = vi.fn();
  render(<ErrorState error={new ApiError(503, "not_ready", "not trained yet")} retry={retry} />);
  expect(screen.getByRole("alert")).toHaveTextContent("not trained yet (not_ready)");
  await userEvent.click(screen.getByRole("button", { name: "Try again" }));
  expect(retry).toHaveBeenCalledOnce();
  render(<Loading what="Calculating" />);
  expect(screen.getByRole("status")).toHaveTextContent("Calculating…");
  render(<Empty>Nothing here.</Empty>);
  expect(screen.getByText("Nothing here.")).toBeInTheDocument();
});

test("Loaded renders each state of a load", () => {
  const { rerender } = render(<Loaded load={{ state: "loading" }}>{() => "data"}</Loaded>);
  expect(screen.getByRole("status")).toBeInTheDocument();
  rerender(<Loaded load={{ state: "error", error: new Error("boom") }}>{() => "data"}</Loaded>);
  expect(screen.getByRole("alert")).toHaveTextContent("boom");
  rerender(<Loaded load={{ state: "done", data: 7 }}>{(n) => `data ${n}`}</Loaded>);
  expect(screen.getByText("data 7")).toBeInTheDocument();
});

test("server-sent events are split at blank lines, across chunks", () => {
  const [first, rest] = parseSse('data: {"a":1}\n\ndata: {"b"');
  expect(first).toEqual(['{"a":1}']);
  const [second, left] = parseSse(rest + ':2}\n\n: keep-alive\n\n');
  expect(second).toEqual(['{"b":2}']);
  expect(left).toBe("");
});

test("suggestions leave out internal calls and keys, in the API's order", () => {
  expect(
    suggested({
      events: [{ name: "Product Viewed" }, { name: "$identify" }, { name: "$page" }, { name: "$alias" }, { name: "Order Completed" }],
      properties: [{ name: "$name" }, { name: "category" }, { name: "revenue" }],
    }),
  ).toEqual({ events: ["Product Viewed", "$page", "Order Completed"], properties: ["category", "revenue"] });
  expect(suggested({})).toEqual({ events: [], properties: [] });
});

test("the churn figure shows who is at risk, their share and value, or when it comes", () => {
  const locale = { locale: "en-US", currency: "USD", timeZone: "UTC" };
  const churn = { scored: 400, at_risk: 50, value_at_risk: 1234.5, threshold: 0.5 };
  const { unmount } = render(<ChurnKpi load={{ state: "done", data: { churn } }} locale={locale} />);
  expect(screen.getByTestId("kpi-At risk")).toHaveTextContent("50");
  expect(screen.getByRole("group", { name: "At risk of churning" })).toHaveTextContent("12.5% of 400 scored · $1,235 of value a year");
  unmount();
  render(<ChurnKpi load={{ state: "error", error: new Error("not_ready") }} locale={locale} />);
  expect(screen.getByRole("group", { name: "At risk of churning" })).toHaveTextContent("after the models' first training");
});

test("a masked profile's predictions come from the profile, without reasons", () => {
  expect(fromProfile({})).toBeNull();
  expect(fromProfile({ churn_risk: 0.4, clv_12m: 120, p_alive: 0.7, best_hour: 9 })).toEqual({
    clv_12m: 120,
    churn_risk: 0.4,
    p_alive: 0.7,
    best_send_time: { hour: 9, source: "profile" },
  });
});
