// Segments: a visual condition builder with a live count and sample before saving, the
// tenant's segments with their sizes, and a segment's size over time.
import { useEffect, useMemo, useState } from "react";
import type { EChartsOption } from "echarts";
import { api, call, type Schemas } from "../api/client";
import { useAuth, useSession } from "../auth";
import { Chart } from "../components/Chart";
import { Empty, ErrorState, Loaded, useLoad } from "../components/States";
import { count, day } from "../format";
import { MatchSelect, RuleItems, blank, condition, type Match, type Rule } from "../components/Rules";

interface Preview {
  count?: number;
  sample?: number[];
  text?: string;
}

function sizesChart(sizes: { day?: string; size?: number }[], l: Parameters<typeof day>[1]): EChartsOption {
  return {
    tooltip: { trigger: "axis" },
    grid: { left: 50, right: 20, top: 20, bottom: 30 },
    xAxis: { type: "category", data: sizes.map((s) => day(s.day ?? "", l)) },
    yAxis: { type: "value" },
    series: [{ type: "line", data: sizes.map((s) => s.size ?? 0), areaStyle: { opacity: 0.1 } }],
  };
}

function Sizes({ id }: { id: string }) {
  const s = useSession();
  const [load] = useLoad(
    () => call(() => api.GET("/api/v1/segments/{id}", { params: { path: { id } } })) as Promise<Schemas["Segment"]>,
    [id],
  );
  const option = useMemo(
    () => (load.state === "done" ? sizesChart(load.data.sizes ?? [], s.locale) : null),
    [load, s.locale],
  );
  return (
    <Loaded load={load}>
      {(seg) =>
        (seg.sizes ?? []).length === 0 ? (
          <Empty>Sizes are kept from the end of its first day.</Empty>
        ) : (
          option && <Chart label={`Size of ${seg.name} over time`} option={option} height={220} />
        )
      }
    </Loaded>
  );
}

export default function Segments() {
  const s = useSession();
  const { can } = useAuth();
  const [name, setName] = useState("");
  const [match, setMatch] = useState<Match>("and");
  const [rules, setRules] = useState<Rule[]>([blank()]);
  const [preview, setPreview] = useState<Preview | null>(null);
  const [previewError, setPreviewError] = useState<unknown>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [saveError, setSaveError] = useState<unknown>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [list, reload] = useLoad(
    () => call(() => api.GET("/api/v1/segments")) as Promise<{ segments?: Schemas["Segment"][] }>,
    [s.tokens.tenant_id],
  );
  const cond = useMemo(() => condition(rules, match), [rules, match]);
  const editable = can("segments.edit");
  // The live count, a moment after the last change.
  useEffect(() => {
    if (!editable) return;
    let live = true;
    const t = setTimeout(() => {
      call(() => api.POST("/api/v1/segments/preview", { body: { condition: cond as never, sample: 5 } }))
        .then((p) => {
          if (!live) return;
          setPreview(p as Preview);
          setPreviewError(null);
        })
        .catch((e) => live && setPreviewError(e));
    }, 350);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [cond, editable]);

  async function save() {
    setSaveError(null);
    try {
      const seg = (await call(() =>
        api.POST("/api/v1/segments", { body: { name, condition: cond as never } }),
      )) as Schemas["Segment"];
      setSaved(seg.name ?? name);
      reload();
    } catch (e) {
      setSaveError(e);
    }
  }

  return (
    <section aria-labelledby="segments-title">
      <h1 id="segments-title">Segments</h1>
      {editable && (
        <form
          className="card builder"
          aria-label="New segment"
          onSubmit={(e) => {
            e.preventDefault();
            void save();
          }}
        >
          <div className="row">
            <label className="grow">
              Name
              <input value={name} onChange={(e) => setName(e.target.value)} required placeholder="e.g. Loyal buyers" />
            </label>
            <MatchSelect match={match} set={setMatch} />
          </div>
          <RuleItems rules={rules} set={setRules} />
          <div className="row">
            <button type="button" onClick={() => setRules([...rules, blank()])}>
              Add rule
            </button>
            <div className="live-count" aria-live="polite" data-testid="live-count">
              {previewError != null ? (
                <ErrorState error={previewError} />
              ) : preview ? (
                <>
                  <strong>{count(preview.count)}</strong> people match now
                </>
              ) : (
                "Counting…"
              )}
            </div>
            <button type="submit" className="primary">
              Save segment
            </button>
          </div>
          {preview?.text && <p className="hint">{preview.text}</p>}
          {saved && <p role="status">Saved “{saved}”.</p>}
          {saveError != null && <ErrorState error={saveError} />}
        </form>
      )}
      <div className="card">
        <h2>Segments</h2>
        <Loaded load={list} reload={reload}>
          {(l) =>
            (l.segments ?? []).length === 0 ? (
              <Empty>No segments yet.</Empty>
            ) : (
              <table className="table" aria-label="Segments">
                <thead>
                  <tr>
                    <th>Name</th>
                    <th>Condition</th>
                    <th>Size</th>
                    <th />
                  </tr>
                </thead>
                <tbody>
                  {(l.segments ?? []).map((x) => (
                    <tr key={x.id}>
                      <td>{x.name}</td>
                      <td className="hint">{x.text}</td>
                      <td className="num" data-testid={`size-${x.id}`}>
                        {count(x.size)}
                      </td>
                      <td>
                        <button type="button" onClick={() => setOpen(open === x.id ? null : (x.id ?? null))}>
                          {open === x.id ? "Hide" : "Size over time"}
                        </button>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Loaded>
        {open && <Sizes id={open} />}
      </div>
    </section>
  );
}
