import { useEffect, useState } from "react";
import { api, fmtCost, RunSummary } from "../api";
import { Alert } from "../components/Alert";
import { Json } from "../components/Json";
import { Phase } from "../components/Phase";
import { go } from "../App";

interface DiffResult {
  a: string; b: string; samePathAndOutputs: boolean; onlyInA: string[]; onlyInB: string[];
  changes: { node: string; field: string; before: unknown; after: unknown }[];
  phase: [string, string]; outputs: [unknown, unknown]; costUsd: [number, number]; seconds: [number | null, number | null];
}

export function DiffPage({ a, b }: { a: string; b: string }) {
  const [runs, setRuns] = useState<RunSummary[]>([]);
  const [result, setResult] = useState<DiffResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => { api<RunSummary[]>("/api/runs").then(setRuns, () => setRuns([])); }, []);
  useEffect(() => {
    setResult(null);
    if (!a || !b) return;
    api<DiffResult>(`/api/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`).then((r) => { setResult(r); setError(null); },
      (e) => setError(e.message));
  }, [a, b]);
  const pick = (which: "a" | "b", value: string) => {
    const q = new URLSearchParams({ a, b, [which]: value });
    go(`diff?${q}`);
  };
  const select = (which: "a" | "b", value: string) => (
    <select data-testid={`diff-${which}`} value={value} onChange={(e) => pick(which, e.target.value)}>
      <option value="">run {which.toUpperCase()}…</option>
      {runs.map((r) => <option key={r.runId} value={r.runId}>{r.runId}</option>)}
    </select>
  );
  return (
    <div className="page diff">
      <div className="filters">{select("a", a)}{select("b", b)}</div>
      {error && <Alert kind="error">{error}</Alert>}
      {result && (
        <div data-testid="diff-result">
          <p>{result.samePathAndOutputs ? "Same path and outputs." : "The runs differ."}</p>
          <table className="grid side">
            <thead><tr><th /><th>A {result.a}</th><th>B {result.b}</th></tr></thead>
            <tbody>
              <tr><td>phase</td><td><Phase phase={result.phase[0] ?? "?"} /></td><td><Phase phase={result.phase[1] ?? "?"} /></td></tr>
              <tr><td>cost</td><td>{fmtCost(result.costUsd[0])}</td><td>{fmtCost(result.costUsd[1])}</td></tr>
              <tr><td>time</td><td>{result.seconds[0]?.toFixed(3) ?? ""} s</td><td>{result.seconds[1]?.toFixed(3) ?? ""} s</td></tr>
              <tr><td>only here</td><td>{result.onlyInA.join(", ")}</td><td>{result.onlyInB.join(", ")}</td></tr>
              {result.changes.map((c, i) => (
                <tr key={i} className="change"><td>{c.node}.{c.field}</td><td><Json value={c.before} /></td><td><Json value={c.after} /></td></tr>))}
              <tr><td>outputs</td><td><Json value={result.outputs[0]} /></td><td><Json value={result.outputs[1]} /></td></tr>
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
