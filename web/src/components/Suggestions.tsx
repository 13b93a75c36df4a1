// Suggestions wherever an event or a property is named: the tenant's event names (most used
// in the last 90 days first) and property keys, as two <datalist>s the inputs point at with
// `list`. The inputs still take any name: an event that has not happened yet can be named.
import { useEffect, useState } from "react";
import { api, call } from "../api/client";
import { useAuth, useSession } from "../auth";

export const EVENT_LIST = "livora-event-names";
export const PROPERTY_LIST = "livora-property-keys";

type Definitions = { events?: { name: string }[]; properties?: { name: string }[] };

/// What the lists offer: no internal calls (`$identify`, `$group`, `$alias`) and no internal
/// keys (`$name`).
export function suggested(d: Definitions): { events: string[]; properties: string[] } {
  return {
    events: (d.events ?? []).map((e) => e.name).filter((n) => !["$identify", "$group", "$alias"].includes(n)),
    properties: (d.properties ?? []).map((p) => p.name).filter((n) => !n.startsWith("$")),
  };
}

export function Suggestions() {
  const s = useSession();
  const { can } = useAuth();
  const allowed = can("analytics.read");
  const tenant = s.tokens.tenant_id;
  const [lists, setLists] = useState<{ events: string[]; properties: string[] }>({ events: [], properties: [] });
  useEffect(() => {
    if (!allowed) return;
    let live = true;
    call(() => api.GET("/api/v1/events/definitions", { params: { query: { days: 90 } } }))
      .then((d) => live && setLists(suggested(d as Definitions)))
      // Only a help: without it the inputs take names as typed.
      .catch(() => live && setLists({ events: [], properties: [] }));
    return () => {
      live = false;
    };
  }, [tenant, allowed]);
  return (
    <>
      <datalist id={EVENT_LIST} data-testid="event-suggestions">
        {lists.events.map((n) => (
          <option key={n} value={n} />
        ))}
      </datalist>
      <datalist id={PROPERTY_LIST}>
        {lists.properties.map((n) => (
          <option key={n} value={n} />
        ))}
      </datalist>
    </>
  );
}
