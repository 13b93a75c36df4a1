// A person: identities, traits, computed attributes, predictions (value, churn risk and
// why, best send time, recommendations), segments, tags, and their events by session. A
// role without personal data sees the profile masked (by the API), its predictions without
// reasons, and neither recommendations nor events.
import { useParams } from "react-router-dom";
import { api, call, type Schemas } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Empty, Loaded, Loading, useLoad, type Load } from "../components/States";
import { count, dateTime, money, percent } from "../format";
import { lookup } from "./person-id";

interface Predictions {
  clv_12m?: number | null;
  churn_risk?: number | null;
  churn_reasons?: { feature?: string; value?: number; effect?: number }[];
  p_alive?: number | null;
  best_send_time?: { hour?: number; source?: string } | null;
}
interface Recs {
  items?: { item: string; score: number; reason: string }[];
}
interface Timeline {
  sessions?: { start?: string; end?: string; events?: Schemas["Event"][] }[];
}

/// A churn feature's name as a sentence part.
const FEATURES: Record<string, string> = {
  days_since_last_active: "days since last active",
  active_days_30: "active days in the last 30",
  active_days_trend: "change in active days",
  tenure_days: "days since first seen",
  orders: "orders",
  revenue: "revenue",
  days_since_last_order: "days since last order",
  p_alive: "P(alive)",
  expected_purchases_30: "purchases expected in 30 days",
  engagements_30: "message engagements in the last 30 days",
  messages_sent_30: "messages sent in the last 30 days",
  sentiment_30: "sentiment of their messages",
};

function feature(name?: string): string {
  return name ? (FEATURES[name] ?? name.replace(/_/g, " ")) : "";
}

function Attributes({ values, money: moneyKeys = [] }: { values: Record<string, unknown>; money?: string[] }) {
  const s = useSession();
  const entries = Object.entries(values).filter(([, v]) => v !== null && v !== undefined);
  if (entries.length === 0) return <Empty>None.</Empty>;
  return (
    <dl className="attrs">
      {entries.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>
            {moneyKeys.includes(k) && typeof v === "number"
              ? money(v, s.locale)
              : typeof v === "string" && /^\d{4}-\d\d-\d\dT/.test(v)
                ? dateTime(v, s.locale)
                : typeof v === "object"
                  ? JSON.stringify(v)
                  : String(v)}
          </dd>
        </div>
      ))}
    </dl>
  );
}

/// The predictions kept on the profile (no reasons): what a masked role sees; `null`
/// before the first training.
export function fromProfile(values: Record<string, number | undefined>): Predictions | null {
  if (values.churn_risk == null && values.clv_12m == null) return null;
  return {
    clv_12m: values.clv_12m,
    churn_risk: values.churn_risk,
    p_alive: values.p_alive,
    best_send_time: values.best_hour == null ? null : { hour: values.best_hour, source: "profile" },
  };
}

export default function Person() {
  const s = useSession();
  const masked = !useAuth().can("pii.view");
  const key = decodeURIComponent(useParams().id ?? "");
  const { id, by } = lookup(key);
  const params = { params: { path: { id }, query: by ? { by } : {} } };
  const [person, reload] = useLoad(
    () => call(() => api.GET("/api/v1/people/{id}", params as never)) as Promise<Schemas["Person"]>,
    [key],
  );
  // What a masked role may not read is not asked for.
  const unless = <T,>(f: () => Promise<T>) => (masked ? () => Promise.resolve(null) : f);
  const [predictions] = useLoad(
    unless(() => call(() => api.GET("/api/v1/people/{id}/predictions", params as never)) as Promise<Predictions>),
    [key, masked],
  );
  const [recs] = useLoad(
    unless(
      () =>
        call(() =>
          api.GET("/api/v1/people/{id}/recommendations", {
            params: { path: { id }, query: { ...(by ? { by } : {}), limit: 5 } },
          } as never),
        ) as Promise<Recs>,
    ),
    [key, masked],
  );
  const [timeline] = useLoad(
    unless(
      () =>
        call(() =>
          api.GET("/api/v1/people/{id}/timeline", {
            params: { path: { id }, query: { ...(by ? { by } : {}), limit: 200 } },
          } as never),
        ) as Promise<Timeline>,
    ),
    [key, masked],
  );
  return (
    <Loaded load={person} reload={reload}>
      {(p) => {
        const traits = (p.traits ?? {}) as Record<string, unknown>;
        // A masked role reads the predictions the profile keeps.
        const shown: Load<Predictions | null> = masked
          ? { state: "done", data: fromProfile((p.predictions ?? {}) as Record<string, number>) }
          : predictions;
        return (
          <section aria-labelledby="person-title">
            <h1 id="person-title">{String(traits.name ?? traits.email ?? (by === "person" ? `Person ${id}` : id))}</h1>
            {masked && (
              <p className="hint" role="note">
                Personal data is masked for your role: identifiers and personal traits show only their first letters.
              </p>
            )}
            <div className="grid2">
              <div className="card">
                <h2>Identities</h2>
                <Attributes
                  values={Object.fromEntries(
                    Object.entries(p.identifiers ?? {}).map(([k, v]) => [k, (v as string[]).join(", ")]),
                  )}
                />
                <h2>Traits</h2>
                <Attributes values={traits} />
              </div>
              <div className="card" aria-label="Predictions">
                <h2>Predictions</h2>
                {shown.state === "loading" && <Loading />}
                {(shown.state === "error" || (shown.state === "done" && !shown.data)) && (
                  <p className="hint">No predictions yet: the models train a few minutes after the start, then daily.</p>
                )}
                {shown.state === "done" && shown.data && (
                  <dl className="attrs">
                    <div>
                      <dt>Lifetime value, next 12 months</dt>
                      <dd>{money(shown.data.clv_12m, s.locale)}</dd>
                    </div>
                    <div>
                      <dt>Churn risk</dt>
                      <dd data-testid="churn-risk">
                        {percent(shown.data.churn_risk)}
                        {(shown.data.churn_reasons ?? []).length > 0 && (
                          <ul className="reasons" aria-label="Why">
                            {(shown.data.churn_reasons ?? []).map((r, i) => (
                              <li key={i}>
                                {feature(r.feature)}: {count(r.value)} ({(r.effect ?? 0) >= 0 ? "raises" : "lowers"} it)
                              </li>
                            ))}
                          </ul>
                        )}
                      </dd>
                    </div>
                    <div>
                      <dt>Still a customer (P(alive))</dt>
                      <dd>{percent(shown.data.p_alive)}</dd>
                    </div>
                    <div>
                      <dt>Best send time</dt>
                      <dd>
                        {shown.data.best_send_time?.hour != null
                          ? `${String(shown.data.best_send_time.hour).padStart(2, "0")}:00`
                          : "—"}
                      </dd>
                    </div>
                  </dl>
                )}
                {!masked && <h2>Recommended</h2>}
                {recs.state === "loading" && <Loading />}
                {recs.state === "error" && <p className="hint">No recommendations until the models are trained.</p>}
                {recs.state === "done" &&
                  recs.data &&
                  ((recs.data.items ?? []).length > 0 ? (
                    <ol aria-label="Recommended items">
                      {(recs.data.items ?? []).map((r) => (
                        <li key={r.item}>
                          {r.item} <span className="hint">({r.reason === "similar" ? "like what they chose" : "popular"})</span>
                        </li>
                      ))}
                    </ol>
                  ) : (
                    <Empty>Nothing to recommend yet.</Empty>
                  ))}
              </div>
              <div className="card">
                <h2>Computed</h2>
                <Attributes
                  values={(p.computed ?? {}) as Record<string, unknown>}
                  money={["revenue", "refunds", "average_order_value"]}
                />
                <h2>Segments</h2>
                <p>{(p.segments ?? []).join(", ") || "None."}</p>
                <h2>Tags</h2>
                <p>{(p.tags ?? []).join(", ") || "None."}</p>
              </div>
            </div>
            <div className="card">
              <h2>Timeline</h2>
              {masked && <p className="hint">Events are personal data: your role does not see them.</p>}
              {timeline.state === "loading" && <Loading />}
              {timeline.state === "done" &&
                timeline.data &&
                ((timeline.data.sessions ?? []).length === 0 ? (
                  <Empty>No events.</Empty>
                ) : (
                  (timeline.data.sessions ?? []).map((session, i) => (
                    <details key={i} open={i === 0} className="session">
                      <summary>
                        Session {dateTime(session.start, s.locale)} · {count(session.events?.length ?? 0)} events
                      </summary>
                      <ul>
                        {(session.events ?? []).map((e, j) => {
                          const ev = e as { type?: string; event?: string; timestamp?: string };
                          return (
                            <li key={j}>
                              <time>{dateTime(ev.timestamp, s.locale)}</time> {ev.event ?? `$${ev.type}`}
                            </li>
                          );
                        })}
                      </ul>
                    </details>
                  ))
                ))}
            </div>
          </section>
        );
      }}
    </Loaded>
  );
}
