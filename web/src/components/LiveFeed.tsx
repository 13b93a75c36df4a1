// Events as they arrive: `GET /api/v1/events/live`, a server-sent event stream read with
// fetch (so the access token goes in the Authorization header, not the URL).
import { useEffect, useState } from "react";
import { accessToken } from "../api/client";
import { useSession } from "../auth";
import { dateTime } from "../format";
import { Empty } from "./States";

export interface LiveEvent {
  type: string;
  event?: string | null;
  timestamp: string;
}

const KEPT = 12;

/// Splits a server-sent event stream's text into the `data:` payloads it completes; returns
/// them and what is left over for the next chunk.
export function parseSse(buffer: string): [string[], string] {
  const out: string[] = [];
  let rest = buffer;
  let i: number;
  while ((i = rest.indexOf("\n\n")) >= 0) {
    const block = rest.slice(0, i);
    rest = rest.slice(i + 2);
    const data = block
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).trimStart())
      .join("\n");
    if (data) out.push(data);
  }
  return [out, rest];
}

export function LiveFeed() {
  const s = useSession();
  const [events, setEvents] = useState<LiveEvent[]>([]);
  const [status, setStatus] = useState<"connecting" | "live" | "closed">("connecting");
  useEffect(() => {
    const abort = new AbortController();
    (async () => {
      try {
        const r = await fetch("/api/v1/events/live", {
          headers: { Authorization: `Bearer ${accessToken()}`, Accept: "text/event-stream" },
          signal: abort.signal,
        });
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        setStatus("live");
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const [datas, rest] = parseSse(buffer + value);
          buffer = rest;
          const fresh = datas.map((d) => JSON.parse(d) as LiveEvent);
          if (fresh.length) setEvents((old) => [...fresh.reverse(), ...old].slice(0, KEPT));
        }
        setStatus("closed");
      } catch {
        if (!abort.signal.aborted) setStatus("closed");
      }
    })();
    return () => abort.abort();
  }, [s.tokens.tenant_id]);
  return (
    <div className="feed" aria-live="polite">
      <div className={`feed-status ${status}`}>{status === "live" ? "● live" : status}</div>
      {events.length === 0 ? (
        <Empty>Waiting for events…</Empty>
      ) : (
        <ul>
          {events.map((e, i) => (
            <li key={`${e.timestamp}-${i}`}>
              <span className="feed-name">{e.event ?? `$${e.type}`}</span>
              <time>{dateTime(e.timestamp, s.locale)}</time>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
