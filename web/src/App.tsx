// The shell: sign-in, then the navigation (what the role may open) and the pages.
import { lazy, Suspense } from "react";
import { NavLink, Navigate, Route, Routes } from "react-router-dom";
import { useAuth } from "./auth";
import { Loading } from "./components/States";
import { Suggestions } from "./components/Suggestions";
import { Login } from "./pages/Login";
import { Overview } from "./pages/Overview";

const Funnels = lazy(() => import("./pages/Funnels"));
const Retention = lazy(() => import("./pages/Insights").then((m) => ({ default: m.Retention })));
const Trends = lazy(() => import("./pages/Insights").then((m) => ({ default: m.Trends })));
const Paths = lazy(() => import("./pages/Insights").then((m) => ({ default: m.PathsPage })));
const People = lazy(() => import("./pages/People"));
const Segments = lazy(() => import("./pages/Segments"));
const Campaigns = lazy(() => import("./pages/Campaigns"));
const Workflows = lazy(() => import("./pages/Workflows"));
const Dashboards = lazy(() => import("./pages/Dashboards"));
const Person = lazy(() => import("./pages/Person"));
const Settings = lazy(() => import("./pages/Settings"));

/// Pages, and the permission each needs.
export const PAGES: { path: string; label: string; needs: string }[] = [
  { path: "/", label: "Overview", needs: "analytics.read" },
  { path: "/dashboards", label: "Dashboards", needs: "analytics.read" },
  { path: "/funnels", label: "Funnels", needs: "analytics.read" },
  { path: "/retention", label: "Retention", needs: "analytics.read" },
  { path: "/trends", label: "Trends", needs: "analytics.read" },
  { path: "/paths", label: "Paths", needs: "analytics.read" },
  // Masked for roles without personal data (the API masks it).
  { path: "/people", label: "People", needs: "analytics.read" },
  { path: "/segments", label: "Segments", needs: "analytics.read" },
  { path: "/workflows", label: "Workflows", needs: "analytics.read" },
  { path: "/campaigns", label: "Campaigns", needs: "analytics.read" },
  { path: "/settings", label: "Settings", needs: "members.manage" },
];

function Forbidden() {
  return (
    <div className="state error" role="alert">
      Your role does not open this page.
    </div>
  );
}

export function App() {
  const { session, restoring, can, logout, switchTenant } = useAuth();
  if (restoring) return <Loading what="Signing in" />;
  if (!session) return <Login />;
  const user = session.tokens.user as { email?: string } | undefined;
  const tenants = (session.tokens.tenants ?? []) as { tenant_id?: string; name?: string | null }[];
  const guard = (needs: string, page: React.ReactNode) => (can(needs) ? page : <Forbidden />);
  return (
    <div className="shell">
      <header className="top">
        <span className="brand">Livora</span>
        <label className="tenant">
          <span className="visually-hidden">Tenant</span>
          <select
            value={session.tokens.tenant_id}
            onChange={(e) => void switchTenant(e.target.value)}
            aria-label="Tenant"
          >
            {tenants.map((t) => (
              <option key={t.tenant_id} value={t.tenant_id}>
                {t.name ?? t.tenant_id}
              </option>
            ))}
          </select>
        </label>
        <span className="who">
          {user?.email} · {String(session.tokens.role)}
        </span>
        <button type="button" onClick={() => void logout()}>
          Sign out
        </button>
      </header>
      <nav className="side" aria-label="Pages">
        {PAGES.filter((p) => can(p.needs)).map((p) => (
          <NavLink key={p.path} to={p.path} end={p.path === "/"}>
            {p.label}
          </NavLink>
        ))}
      </nav>
      <main className="page">
        <Suggestions />
        <Suspense fallback={<Loading />}>
          <Routes>
            <Route path="/" element={guard("analytics.read", <Overview />)} />
            <Route path="/dashboards" element={guard("analytics.read", <Dashboards />)} />
            <Route path="/funnels" element={guard("analytics.read", <Funnels />)} />
            <Route path="/retention" element={guard("analytics.read", <Retention />)} />
            <Route path="/trends" element={guard("analytics.read", <Trends />)} />
            <Route path="/paths" element={guard("analytics.read", <Paths />)} />
            <Route path="/people" element={guard("analytics.read", <People />)} />
            <Route path="/people/:id" element={guard("analytics.read", <Person />)} />
            <Route path="/segments" element={guard("analytics.read", <Segments />)} />
            <Route path="/workflows" element={guard("analytics.read", <Workflows />)} />
            <Route path="/campaigns" element={guard("analytics.read", <Campaigns />)} />
            <Route path="/settings" element={guard("members.manage", <Settings />)} />
            <Route path="*" element={<Navigate to="/" replace />} />
          </Routes>
        </Suspense>
      </main>
    </div>
  );
}
