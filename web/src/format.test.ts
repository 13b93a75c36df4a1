import { change, count, dateTime, money, percent } from "./format";

const usd = { currency: "USD", timeZone: "America/New_York", locale: "en-US" };

test("money follows the tenant's currency and locale", () => {
  expect(money(1234.5, usd)).toBe("$1,235");
  expect(money(12.5, usd)).toBe("$12.50");
  expect(money(12.5, { ...usd, currency: "EUR", locale: "de-DE" }).replace(/\s/g, " ")).toBe(
    "12,50 €",
  );
  expect(money(null, usd)).toBe("—");
  expect(money(Number.NaN, usd)).toBe("—");
});

test("dates are shown in the tenant's time zone", () => {
  // 02:30 UTC is the evening before in New York.
  expect(dateTime("2026-03-01T02:30:00Z", usd)).toBe("Feb 28, 2026, 9:30 PM");
  expect(dateTime("2026-03-01T02:30:00Z", { ...usd, timeZone: "Asia/Tokyo" })).toBe(
    "Mar 1, 2026, 11:30 AM",
  );
  expect(dateTime(null, usd)).toBe("—");
});

test("counts, percentages and changes", () => {
  expect(count(1234567, usd)).toBe("1,234,567");
  expect(percent(0.1234, usd)).toBe("12.3%");
  expect(change(120, 100)).toBeCloseTo(0.2);
  expect(change(5, 0)).toBeNull();
});
