// A person in a URL: `u:<userId>` or `a:<anonymousId>` (as journeys and messages name them),
// or `p:<number>` (the profile's number: how a role without personal data finds one).

export function personKey(identifiers: Record<string, string[] | undefined>): string | null {
  const u = identifiers.user_id?.[0];
  if (u) return `u:${u}`;
  const a = identifiers.anonymous_id?.[0];
  return a ? `a:${a}` : null;
}

/// The `id` and `by` of the person routes for a key.
export function lookup(key: string): { id: string; by?: string } {
  if (key.startsWith("a:")) return { id: key.slice(2), by: "anonymous_id" };
  if (key.startsWith("p:")) return { id: key.slice(2), by: "person" };
  if (key.startsWith("u:")) return { id: key.slice(2) };
  return { id: key };
}
