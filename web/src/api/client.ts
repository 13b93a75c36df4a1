// The API client, typed by the OpenAPI document (`npm run api-types` regenerates
// `schema.d.ts` from crates/server/src/openapi.json; the tests check it is current).
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Tokens = Schemas["Tokens"];

/// An API error as the server words it: a machine-readable code and a message.
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let access: string | null = null;
let onUnauthorized: (() => Promise<boolean>) | null = null;

export function setAccessToken(token: string | null) {
  access = token;
}

export function accessToken(): string | null {
  return access;
}

/// Called on a 401: refreshes the session (true: retry the request).
export function setRefresher(f: (() => Promise<boolean>) | null) {
  onUnauthorized = f;
}

const auth: Middleware = {
  onRequest({ request }) {
    if (access && !request.headers.has("Authorization")) {
      request.headers.set("Authorization", `Bearer ${access}`);
    }
    return request;
  },
};

export const api = createClient<paths>({
  baseUrl: window.location.origin,
  // Looked up at each call (tests replace it).
  fetch: (request: Request) => globalThis.fetch(request),
});
api.use(auth);

/// Unwraps an openapi-fetch answer: the data, or an [`ApiError`]. A 401 refreshes the
/// session once and retries.
export async function call<T>(
  request: () => Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let r = await request();
  if (r.response.status === 401 && onUnauthorized && (await onUnauthorized())) {
    r = await request();
  }
  if (r.error !== undefined || !r.response.ok) {
    const e = (r.error ?? {}) as { code?: string; message?: string };
    throw new ApiError(
      r.response.status,
      e.code ?? "http_" + r.response.status,
      e.message ?? r.response.statusText,
    );
  }
  return r.data as T;
}

/// `POST /api/v1/query`, typed by its kind.
export type FunnelQuery = Schemas["FunnelQuery"];
export type FunnelResult = Schemas["FunnelResult"];
export type TrendsQuery = Schemas["TrendsQuery"];
export type TrendsResult = Schemas["TrendsResult"];

export async function query<R>(body: Record<string, unknown>): Promise<R> {
  return call(() =>
    api.POST("/api/v1/query", { body: body as never }) as Promise<{
      data?: R;
      error?: unknown;
      response: Response;
    }>,
  );
}
