import { useEffect, useState } from "react";
import { api, fmtAge, fmtCost, Info, RunSummary } from "../api";
import { Alert } from "../components/Alert";
import { Phase, Progress } from "../components/Phase";
import { go } from "../App";

const PHASES = ["", "Pending", "Running", "Waiting", "Suspended", "Succeeded", "Failed", "Cancelled"];

export function RunsPage({ info }: { info: Info }) {
  const [runs, setRuns] = useState<RunSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [namespace, setNamespace] = useState(info.mode === "cluster" ? "default" : "");
  const [label, setLabel] = useState("");
  const [phase, setPhase] = useState("");
  const [picked, setPicked] = useState<string[]>([]);

  useEffect(() => {
    let alive = true;
    const load = () => {
      const q = new URLSearchParams();
      if (namespace) q.set("namespace", namespace);
      if (label) q.set("label", label);
      if (phase) q.set("phase", phase);
      api<RunSummary[]>(`/api/runs?${q}`).then(
        (r) => { if (alive) { setRuns(r); setError(null); } },
        (e) => { if (alive) setError(e.message); },
      );
    };
    load();
    const timer = setInterval(load, 2000);
    return () => { alive = false; clearInterval(timer); };
  }, [namespace, label, phase]);

  const toggle = (id: string) =>
    setPicked((p) => (p.includes(id) ? p.filter((x) => x !== id) : [...p.slice(-1), id]));

  return (
    <div className="page runs">
      <div className="filters">
        <label>namespace <input data-testid="filter-namespace" value={namespace} onChange={(e) => setNamespace(e.target.value)} placeholder="all" /></label>
        <label>label <input data-testid="filter-label" value={label} onChange={(e) => setLabel(e.target.value)} placeholder="app=support" /></label>
        <label>phase <select data-testid="filter-phase" value={phase} onChange={(e) => setPhase(e.target.value)}>
          {PHASES.map((p) => <option key={p} value={p}>{p || "any"}</option>)}
        </select></label>
        <button disabled={picked.length !== 2} data-testid="diff-picked"
                onClick={() => go(`diff?a=${encodeURIComponent(picked[0])}&b=${encodeURIComponent(picked[1])}`)}>
          Diff the two picked
        </button>
      </div>
      {error && <Alert kind="error">{error}</Alert>}
      {runs === null ? <div className="loading">Loading runs…</div> : runs.length === 0 ? (
        <div className="empty">No runs{phase || label || namespace ? " match these filters" : " yet"}.
          {info.mode === "local" && <> Start one with <code>agentflow run FILE.yaml</code> or from the <a href="#/designer">designer</a>.</>}
        </div>
      ) : (
        <table className="grid" data-testid="runs">
          <thead><tr><th /><th>run</th><th>workflow</th><th>namespace</th><th>phase</th><th>progress</th><th>cost</th><th>age</th></tr></thead>
          <tbody>
            {runs.map((r) => (
              <tr key={r.runId} data-testid={`run-${r.runId}`} data-phase={r.phase}>
                <td><input type="checkbox" checked={picked.includes(r.runId)} onChange={() => toggle(r.runId)} aria-label={`pick ${r.runId} for diff`} /></td>
                <td><a href={`#/runs/${encodeURIComponent(r.runId)}`}>{r.runId}</a></td>
                <td>{r.workflow}</td>
                <td>{r.namespace ?? ""}</td>
                <td><Phase phase={r.phase} />{r.waiting && r.waiting.length > 0 && <span className="muted"> waits: {r.waiting.join(", ")}</span>}</td>
                <td><Progress done={r.progress.done} total={r.progress.total} /></td>
                <td>{fmtCost(r.costUsd)}</td>
                <td>{fmtAge(r.created ?? r.startedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
