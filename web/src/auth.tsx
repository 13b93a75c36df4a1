// The signed-in session: tokens (the refresh token kept in sessionStorage, so a reload
// stays signed in and closing the tab signs out), who the user is, the tenant, and what
// the role may do.
import { createContext, useCallback, useContext, useEffect, useMemo, useState } from "react";
import type { ReactNode } from "react";
import { api, call, setAccessToken, setRefresher, type Schemas, type Tokens } from "./api/client";
import type { Locale } from "./format";

export interface Session {
  tokens: Tokens;
  tenant: Schemas["Tenant"];
  permissions: string[];
  /// The signed-in staff user (absent for an API key).
  userId?: string;
  locale: Locale;
}

interface Auth {
  session: Session | null;
  /// True until a stored session has been tried.
  restoring: boolean;
  login(email: string, password: string): Promise<void>;
  logout(): Promise<void>;
  switchTenant(tenantId: string): Promise<void>;
  can(permission: string): boolean;
}

const AuthContext = createContext<Auth | null>(null);
const KEY = "livora.refresh";
let pending: Promise<Session | null> | null = null;

async function open(tokens: Tokens): Promise<Session> {
  setAccessToken(tokens.access_token ?? null);
  const [me, tenant] = await Promise.all([
    call(() => api.GET("/api/v1/me")),
    call(() => api.GET("/api/v1/tenant")),
  ]);
  if (tokens.refresh_token) sessionStorage.setItem(KEY, tokens.refresh_token);
  const m = me as { permissions?: string[]; principal?: { user_id?: string } };
  const t = tenant as Schemas["Tenant"];
  return {
    tokens,
    tenant: t,
    permissions: m.permissions ?? [],
    userId: m.principal?.user_id,
    locale: {
      currency: (t as { currency?: string }).currency ?? "USD",
      timeZone: (t as { time_zone?: string }).time_zone ?? "UTC",
    },
  };
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<Session | null>(null);
  const [restoring, setRestoring] = useState(true);

  const refresh = useCallback((tenantId?: string): Promise<Session | null> => {
    // A refresh token works once: callers at the same moment (requests that all got a
    // 401, React running an effect twice) share one refresh.
    pending ??= (async () => {
      const token = sessionStorage.getItem(KEY);
      if (!token) return null;
      sessionStorage.removeItem(KEY);
      const r = await api.POST("/api/v1/auth/refresh", {
        body: { refresh_token: token, ...(tenantId ? { tenant_id: tenantId } : {}) },
      });
      if (!r.data) return null;
      return open(r.data as Tokens);
    })().finally(() => {
      pending = null;
    });
    return pending;
  }, []);

  useEffect(() => {
    setRefresher(async () => {
      const s = await refresh().catch(() => null);
      setSession(s);
      return s !== null;
    });
    refresh()
      .then(setSession)
      .catch(() => setSession(null))
      .finally(() => setRestoring(false));
    return () => setRefresher(null);
  }, [refresh]);

  const value = useMemo<Auth>(
    () => ({
      session,
      restoring,
      async login(email, password) {
        const tokens = await call(() =>
          api.POST("/api/v1/auth/login", { body: { email, password } }),
        );
        setSession(await open(tokens as Tokens));
      },
      async logout() {
        await api.POST("/api/v1/auth/logout").catch(() => undefined);
        sessionStorage.removeItem(KEY);
        setAccessToken(null);
        setSession(null);
      },
      async switchTenant(tenantId) {
        setSession(await refresh(tenantId));
      },
      can(permission) {
        return session?.permissions.includes(permission) ?? false;
      },
    }),
    [session, restoring, refresh],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): Auth {
  const a = useContext(AuthContext);
  if (!a) throw new Error("useAuth outside AuthProvider");
  return a;
}

/// The session of a signed-in page.
export function useSession(): Session {
  const { session } = useAuth();
  if (!session) throw new Error("useSession without a session");
  return session;
}
