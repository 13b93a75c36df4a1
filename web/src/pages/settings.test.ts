import { describe, expect, it } from "vitest";
import { channelSettings, policyOf, PROVIDERS } from "./SettingsData";

describe("channel settings", () => {
  it("sends ports as numbers, leaves empty optional fields out and defaults choices", () => {
    expect(channelSettings("email", { host: " smtp.shop.example ", port: "587", username: "", from: "a@b.c" })).toEqual({
      host: "smtp.shop.example",
      port: 587,
      security: "starttls",
      from: "a@b.c",
    });
  });
  it("marks every credential the server seals as secret", () => {
    const sealed = ["password", "auth_token", "access_token", "private_key", "secret", "app_secret", "verify_token"];
    for (const { fields } of Object.values(PROVIDERS)) {
      for (const f of fields) expect(!!f.secret, f.name).toBe(sealed.includes(f.name));
    }
  });
});

describe("delivery policy form", () => {
  const form = { node: false, cap: "3", quiet: true, start: 22, end: 7, optIn: ["email"] };
  it("gives the tenant's policy", () => {
    expect(policyOf(form)).toEqual({ frequency_cap: 3, quiet_hours: { start: 22, end: 7 }, opt_in: ["email"] });
  });
  it("no cap when empty, no quiet hours when unticked", () => {
    expect(policyOf({ ...form, cap: " ", quiet: false })).toEqual({ frequency_cap: null, quiet_hours: null, opt_in: ["email"] });
  });
  it("null for the server's defaults", () => {
    expect(policyOf({ ...form, node: true })).toBeNull();
  });
});
