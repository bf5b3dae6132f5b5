import { useEffect, useState } from "react";
import { api, fmtCost, fmtDuration } from "../api";
import { Json } from "./Json";
import { Phase } from "./Phase";
import { VirtualList } from "./VirtualList";

interface Attempt {
  attempt: number; scheduledAt: number | null; startedAt: number | null; finishedAt: number | null;
  outcome: string | null; error: { type: string; message: string } | null; executor: string | null; pod?: string;
  calls: { kind: string; name: string; input_tokens: number; output_tokens: number; tokens?: number; cost_usd: number; latency_ms: number; cached: boolean; response: unknown }[];
}
interface Item { id: string; phase: string; attempts: number; costUsd: number; message: string | null; startedAt: number | null; finishedAt: number | null; childRun?: string }
interface Detail {
  id: string; step: string; phase: string; attempts: Attempt[]; inputs: unknown; output: unknown;
  error: { type: string; message: string } | null; message: string | null; costUsd: number; tokens: number;
  startedAt: number | null; finishedAt: number | null; spec: Record<string, unknown> | null;
  approval: { message: string; approvers: string[]; deadline: number | null; gate: unknown; decision: unknown } | null;
  events: { type: string; at: number; data: unknown }[]; eventsOmitted: number;
  items?: Item[]; visits?: Item[]; note?: string; childRun?: string;
}

function runLink(id: string) {
  return `#/runs/${encodeURIComponent(id)}`;
}

export function NodePanel({ runId, nodeId, version, waitingNodes, onClose, onSelect, onDecided }: {
  runId: string; nodeId: string; version: number; waitingNodes: string[];
  onClose: () => void; onSelect: (id: string) => void; onDecided: (text: string, ok: boolean) => void;
}) {
  const [detail, setDetail] = useState<Detail | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [decisionError, setDecisionError] = useState<string | null>(null);

  useEffect(() => {
    let alive = true;
    api<Detail>(`/api/runs/${encodeURIComponent(runId)}/nodes/${encodeURIComponent(nodeId)}`).then(
      (d) => { if (alive) { setDetail(d); setError(null); } }, (e) => { if (alive) setError(e.message); });
    return () => { alive = false; };
  }, [runId, nodeId, version]);

  const lastVisit = detail?.visits && detail.visits.length ? detail.visits[detail.visits.length - 1] : null;
  const waitingId = !detail ? undefined
    : lastVisit ? (lastVisit.phase === "Waiting" ? lastVisit.id : undefined)
    : detail.phase === "Waiting" && !detail.items ? detail.id
    : waitingNodes.find((w) => w === detail.id);
  const decide = async (approved: boolean) => {
    if (!waitingId) return;
    setBusy(true);
    setDecisionError(null);
    try {
      await api(`/api/runs/${encodeURIComponent(runId)}/nodes/${encodeURIComponent(waitingId)}/decision`, { approved, reason });
      onDecided(`${waitingId} ${approved ? "approved" : "rejected"}`, true);
      setReason("");
    } catch (e) {
      setDecisionError((e as Error).message);
      onDecided((e as Error).message, false);
    } finally {
      setBusy(false);
    }
  };

  return (
    <aside className="panel node-panel" data-testid="node-panel">
      <div className="panel-head"><h3>{nodeId}</h3><button className="link" onClick={onClose} aria-label="close">×</button></div>
      {error && <div className="alert alert-error" role="alert">{error}</div>}
      {!detail ? <div className="loading">Loading…</div> : (
        <>
          <div className="facts"><Phase phase={detail.phase} /><span>{fmtDuration(detail.startedAt, detail.finishedAt)}</span>
            <span>{fmtCost(detail.costUsd)}</span><span>{detail.tokens} tokens</span><span>{detail.attempts.length} attempt(s)</span></div>
          {detail.note && <div className="muted">{detail.note}</div>}
          {detail.message && <div className="reason">{detail.message}</div>}
          {detail.childRun && <div className="child-run" data-testid="child-run">child run: <a href={runLink(detail.childRun)}>{detail.childRun}</a></div>}
          {waitingId && (
            <div className="approval" data-testid="approval">
              <h4>Waiting for a decision on {waitingId}</h4>
              {detail.approval?.message && <p>{detail.approval.message}</p>}
              {detail.approval?.approvers && detail.approval.approvers.length > 0 && <p className="muted">approvers: {detail.approval.approvers.join(", ")}</p>}
              <input data-testid="reason" placeholder="reason (recorded)" value={reason} onChange={(e) => setReason(e.target.value)} />
              <button data-testid="approve" disabled={busy} onClick={() => decide(true)}>Approve</button>
              <button data-testid="reject" disabled={busy} className="danger" onClick={() => decide(false)}>Reject</button>
              {decisionError && <div className="alert alert-error" role="alert" data-testid="decision-error">{decisionError}</div>}
            </div>
          )}
          {detail.items && (
            <section><h4>{detail.items.length} fan-out items</h4>
              <VirtualList testid="items" items={detail.items} rowHeight={26} height={Math.min(260, detail.items.length * 26 + 4)} render={(it) => (
                <div className={`list-row phase-${it.phase}`} onClick={() => onSelect(it.id)}>
                  <span className="name">{it.id}</span><span className={`phase phase-${it.phase}`}>{it.phase}</span>
                  <span>{fmtDuration(it.startedAt, it.finishedAt)}</span><span>{it.message ?? ""}</span>
                  {it.childRun && <a href={runLink(it.childRun)} onClick={(e) => e.stopPropagation()}>child run</a>}
                </div>)} />
            </section>
          )}
          {detail.visits && detail.visits.length > 0 && (
            <section><h4>{detail.visits.length} visit(s)</h4>
              {detail.visits.map((v) => (
                <div key={v.id} className={`list-row phase-${v.phase}`} onClick={() => onSelect(v.id)}>
                  <span className="name">{v.id}</span><span className={`phase phase-${v.phase}`}>{v.phase}</span>
                  <span>{fmtDuration(v.startedAt, v.finishedAt)}</span></div>))}
            </section>
          )}
          {detail.error && <section><h4>Error</h4><div className="error-box">{detail.error.type}: {detail.error.message}</div></section>}
          <section><h4>Inputs</h4><Json value={detail.inputs} /></section>
          <section><h4>Output</h4><Json value={detail.output} /></section>
          {detail.attempts.length > 0 && (
            <section><h4>Attempts</h4>
              {detail.attempts.map((a) => (
                <div key={a.attempt} className="attempt">
                  <div>#{a.attempt} {a.outcome ?? "running"} · {fmtDuration(a.startedAt ?? a.scheduledAt, a.finishedAt)}
                    {a.executor && <span className="muted"> · {a.executor}</span>}{a.pod && <span className="muted"> · pod {a.pod}</span>}</div>
                  {a.error && <div className="error-box">{a.error.type}: {a.error.message}</div>}
                  {a.calls.length > 0 && (
                    <ul className="calls">{a.calls.map((c, i) => (
                      <li key={i} data-testid="call"><b>{c.kind}</b> {c.name} · {c.tokens ?? c.input_tokens + c.output_tokens} tokens · {fmtCost(c.cost_usd)} · {Math.round(c.latency_ms)} ms{c.cached ? " · cached" : ""}</li>))}
                    </ul>)}
                </div>))}
            </section>
          )}
          <details><summary>Spec</summary><Json value={detail.spec} /></details>
          <details><summary>Journal events ({detail.events.length}{detail.eventsOmitted ? ` of ${detail.events.length + detail.eventsOmitted}` : ""})</summary>
            <ul className="events">{detail.events.map((e, i) => <li key={i}><code>{e.type}</code> {new Date(e.at * 1000).toISOString().slice(11, 23)}</li>)}</ul>
          </details>
        </>
      )}
    </aside>
  );
}
