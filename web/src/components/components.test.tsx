import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { ApiError } from "../api/client";
import { Kpi } from "../pages/Overview";
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
