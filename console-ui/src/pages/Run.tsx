import { ReactNode, useCallback, useEffect, useRef, useState } from "react";
import { api, fmtCost, fmtDuration, Info, NodeState, RunGraph as Graph, RunSummary, stream } from "../api";
import { Alert } from "../components/Alert";
import { Phase, Progress } from "../components/Phase";
import { RunGraph } from "../components/RunGraph";
import { NodePanel } from "../components/NodePanel";
import { VirtualList } from "../components/VirtualList";
import { go } from "../App";

type Notice = { kind: "error" | "ok" | "info"; text: string } | null;

// Past this many graph nodes the page opens on the (virtualised) list: drawing the graph takes seconds there.
const LIST_FIRST = 2000;

export function RunPage({ runId, info }: { runId: string; info: Info }) {
  const [graph, setGraph] = useState<Graph | null>(null);
  const [run, setRun] = useState<RunSummary | null>(null);
  const [states, setStates] = useState<Record<string, NodeState>>({});
  const [seq, setSeq] = useState(-1);
  const [selected, setSelected] = useState<string | null>(null);
  const [notice, setNotice] = useState<Notice>(null);
  const [live, setLive] = useState<"connecting" | "live" | "ended" | "error">("connecting");
  const [view, setView] = useState<"graph" | "list">("graph");
  const [version, setVersion] = useState(0); // bumps on every update: the node panel reloads its node
  const stopRef = useRef<(() => void) | null>(null);

  const load = useCallback(() => {
    api<Graph>(`/api/runs/${encodeURIComponent(runId)}`).then((g) => {
      if (g.nodes.length > LIST_FIRST) setView("list");
      setGraph(g);
      setRun(g.run);
      setStates(Object.fromEntries(g.nodes.map((n) => [n.id, n.state])));
      setSeq(g.seq);
      stopRef.current?.();
      setLive("connecting");
      stopRef.current = stream(`/api/runs/${encodeURIComponent(runId)}/events`, g.seq, (u) => {
        setLive("live");
        setRun(u.run);
        setSeq(u.seq);
        setVersion((v) => v + 1);
        if (Object.keys(u.nodes).length) setStates((s) => ({ ...s, ...u.nodes }));
      }, () => setLive("ended"), (message) => { setLive("error"); setNotice({ kind: "error", text: message }); });
    }, (e) => setNotice({ kind: "error", text: e.message }));
  }, [runId]);

  useEffect(() => {
    load();
    return () => stopRef.current?.();
  }, [load]);

  const act = async (what: string, path: string, body: unknown = {}) => {
    setNotice(null);
    try {
      const result = await api<Record<string, unknown>>(path, body);
      if (what === "retry" && typeof result.run === "string") {
        setNotice({ kind: "ok", text: `retrying as ${result.run} from step ${result.fromStep}` });
        go(`runs/${encodeURIComponent(result.run)}`);
        return;
      }
      if (what === "replay") {
        const same = result.samePathAndOutputs;
        setNotice({ kind: same ? "ok" : "error", text: same ? "replay: same path, same outputs (no model or tool was called)"
          : `replay DIVERGED: ${JSON.stringify(result.changes)}` });
        return;
      }
      setNotice({ kind: "ok", text: `${what}: done${result.note ? ` (${result.note})` : ""}` });
      if (what === "resume") load();
    } catch (e) {
      setNotice({ kind: "error", text: (e as Error).message });
    }
  };

  if (!graph || !run) return notice ? <Alert kind="error">{notice.text}</Alert> : <div className="loading">Loading run…</div>;
  const base = `/api/runs/${encodeURIComponent(runId)}`;
  const nodeList = graph.nodes.map((n) => ({ ...n, state: states[n.id] ?? n.state }));
  return (
    <div className="page run" data-testid="run-page" data-seq={seq} data-phase={run.phase}>
      <div className="run-head">
        <h2>{run.workflow} <span className="muted small">{run.runId}</span></h2>
        <div className="facts">
          <Phase phase={run.phase} />
          <Progress done={run.progress.done} total={run.progress.total} />
          <span>{fmtCost(run.costUsd)}</span>
          <span>{run.tokens} tokens</span>
          <span>{fmtDuration(run.startedAt, run.finishedAt)}</span>
          <span className={`live live-${live}`} data-testid="live">{live}</span>
          {run.traceId && <span>trace <code>{run.traceId}</code></span>}
        </div>
        {run.reason && <div className="reason">{run.reason}</div>}
        <div className="actions">
          <button data-testid="cancel" disabled={!!run.finished} onClick={() => act("cancel", `${base}/cancel`, { reason: "from the console" })}>Cancel</button>
          {info.canResume && <button data-testid="resume" disabled={!!run.finished || !!run.driving} title={run.driving ? "a process drives this run already" : ""} onClick={() => act("resume", `${base}/resume`)}>Resume</button>}
          {info.mode === "local" && <button data-testid="retry" disabled={run.phase !== "Failed"} onClick={() => act("retry", `${base}/retry`)}>Retry</button>}
          <button data-testid="replay" onClick={() => act("replay", `${base}/replay`)}>Replay</button>
          <button className="link" onClick={() => setView(view === "graph" ? "list" : "graph")} data-testid="toggle-view">
            {view === "graph" ? `list of ${graph.nodes.length} nodes` : "graph"}
          </button>
        </div>
        {notice && <Alert kind={notice.kind} onClose={() => setNotice(null)}>{notice.text}</Alert>}
        {run.waiting && run.waiting.length > 0 && (
          <Alert kind="info">Waiting for a decision: {run.waiting.slice(0, 10).map((w) => (
            <button key={w} className="link" onClick={() => setSelected(w.replace(/#\d+$/, ""))}>{w}</button>)).reduce<ReactNode[]>((acc, b) => (acc.length ? [...acc, ", ", b] : [b]), [])}
            {(run.waitingCount ?? run.waiting.length) > 10 && <span> and {(run.waitingCount ?? run.waiting.length) - 10} more</span>}</Alert>
        )}
      </div>
      <div className="run-body">
        {view === "graph" ? (
          <RunGraph nodes={graph.nodes} edges={graph.edges} states={states} selected={selected} onSelect={setSelected} />
        ) : (
          <VirtualList testid="node-list" items={nodeList} rowHeight={28} height={600} render={(n) => (
            <div className={`list-row phase-${n.state.phase}`} onClick={() => setSelected(n.id)}>
              <span className="name">{n.id}</span><span className={`phase phase-${n.state.phase}`}>{n.state.phase}</span>
              <span>{n.state.items !== undefined ? `${n.state.items} items` : ""}</span>
              <span>{fmtDuration(n.state.startedAt, n.state.finishedAt)}</span><span>{fmtCost(n.state.costUsd)}</span>
            </div>
          )} />
        )}
        {selected && (
          <NodePanel runId={runId} nodeId={selected} version={version} waitingNodes={run.waiting ?? []}
                     onClose={() => setSelected(null)} onSelect={setSelected}
                     onDecided={(text, ok) => setNotice({ kind: ok ? "ok" : "error", text })} />
        )}
      </div>
    </div>
  );
}
