// Loading, empty and error states, and the hook that loads a page's data.
import { useCallback, useEffect, useState } from "react";
import type { ReactNode } from "react";
import { ApiError } from "../api/client";

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div className="state" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> {what}…
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="state empty">{children}</div>;
}

export function ErrorState({ error, retry }: { error: unknown; retry?: () => void }) {
  const message =
    error instanceof ApiError
      ? `${error.message} (${error.code})`
      : error instanceof Error
        ? error.message
        : String(error);
  return (
    <div className="state error" role="alert">
      <strong>Something went wrong.</strong> {message}
      {retry && (
        <button type="button" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

export type Load<T> =
  | { state: "loading" }
  | { state: "error"; error: unknown }
  | { state: "done"; data: T };

/// Runs `f` when `deps` change; `reload` runs it again.
export function useLoad<T>(f: () => Promise<T>, deps: unknown[]): [Load<T>, () => void] {
  const [load, setLoad] = useState<Load<T>>({ state: "loading" });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    setLoad({ state: "loading" });
    f().then(
      (data) => live && setLoad({ state: "done", data }),
      (error) => live && setLoad({ state: "error", error }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return [load, reload];
}

/// Renders a [`Load`]: its states, or `children` with the data.
export function Loaded<T>({
  load,
  reload,
  children,
}: {
  load: Load<T>;
  reload?: () => void;
  children: (data: T) => ReactNode;
}) {
  if (load.state === "loading") return <Loading />;
  if (load.state === "error") return <ErrorState error={load.error} retry={reload} />;
  return <>{children(load.data)}</>;
}
