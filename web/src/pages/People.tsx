// People: search by identifier or trait, sorted by a computed attribute. A role without
// personal data sees the list masked (the API masks it) and cannot search.
import { useState } from "react";
import { Link } from "react-router-dom";
import { api, call, type Schemas } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Empty, Loaded, useLoad } from "../components/States";
import { count, dateTime, money } from "../format";
import { personKey } from "./person-id";

type Page = { people?: Schemas["Person"][]; total?: number };
const SORTS = ["last_seen", "revenue", "orders", "engagement"] as const;

export default function People() {
  const s = useSession();
  const masked = !useAuth().can("pii.view");
  const [q, setQ] = useState("");
  const [search, setSearch] = useState("");
  const [sort, setSort] = useState<(typeof SORTS)[number]>("last_seen");
  const [load, reload] = useLoad(
    () =>
      call(() =>
        api.GET("/api/v1/people", {
          params: { query: { q: search || undefined, sort, limit: 50 } },
        }),
      ) as Promise<Page>,
    [search, sort, s.tokens.tenant_id],
  );
  return (
    <section aria-labelledby="people-title">
      <h1 id="people-title">People</h1>
      <form
        className="row"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          setSearch(q.trim());
        }}
      >
        {masked ? (
          <p className="grow hint" role="note">
            Personal data is masked for your role, and searching by it is off.
          </p>
        ) : (
          <label className="grow">
            <span className="visually-hidden">Search people</span>
            <input
              type="search"
              placeholder="Email, user id, name…"
              value={q}
              onChange={(e) => setQ(e.target.value)}
            />
          </label>
        )}
        <label>
          Sort by
          <select value={sort} onChange={(e) => setSort(e.target.value as typeof sort)}>
            {SORTS.map((x) => (
              <option key={x} value={x}>
                {x.replace("_", " ")}
              </option>
            ))}
          </select>
        </label>
        {!masked && <button type="submit">Search</button>}
      </form>
      <Loaded load={load} reload={reload}>
        {(page) =>
          (page.people ?? []).length === 0 ? (
            <Empty>{search ? `No one matches “${search}”.` : "No profiles yet."}</Empty>
          ) : (
            <table className="table" aria-label="People">
              <thead>
                <tr>
                  <th>Person</th>
                  <th>Email</th>
                  <th>Last seen</th>
                  <th>Orders</th>
                  <th>Revenue</th>
                </tr>
              </thead>
              <tbody>
                {(page.people ?? []).map((p) => {
                  // Masked, a person is found by the profile's number.
                  const key = masked ? `p:${p.id}` : personKey((p.identifiers ?? {}) as Record<string, string[]>);
                  const c = (p.computed ?? {}) as Record<string, unknown>;
                  const t = (p.traits ?? {}) as Record<string, unknown>;
                  return (
                    <tr key={p.id}>
                      <td>
                        {key ? (
                          <Link to={`/people/${encodeURIComponent(key)}`}>
                            {String(t.name ?? (masked ? `Person ${p.id}` : key.slice(2)))}
                          </Link>
                        ) : (
                          p.id
                        )}
                      </td>
                      <td>{String(t.email ?? "")}</td>
                      <td>{dateTime(c.last_seen as string | undefined, s.locale)}</td>
                      <td className="num">{count(c.orders as number | undefined)}</td>
                      <td className="num">{money(c.revenue as number | undefined, s.locale)}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </section>
  );
}
