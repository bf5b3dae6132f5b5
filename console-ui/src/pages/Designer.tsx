import { DragEvent, useCallback, useEffect, useMemo, useRef, useState } from "react";
import {
  Background, Connection, Controls, Edge, EdgeChange, Handle, MarkerType, Node, NodeChange, NodeProps, Position,
  ReactFlow, ReactFlowProvider, applyNodeChanges, useReactFlow,
} from "@xyflow/react";
import { api, Findings, Info, Problem } from "../api";
import { Alert } from "../components/Alert";
import { Schema, SchemaForm } from "../components/SchemaForm";
import { go } from "../App";

type Obj = Record<string, unknown>;
interface Item { id: string; data: Obj; position: { x: number; y: number }; measured?: { width?: number; height?: number } }
type Mode = "dag" | "fsm";

const API_VERSION = "agentflow.dev/v1alpha1";
const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
let counter = 0;
const uid = () => `n${++counter}`;

function clone<T>(v: T): T { return JSON.parse(JSON.stringify(v)) as T; }
function nameOf(d: Obj): string { return String(d.name ?? ""); }
function meta(doc: Obj): Obj { return (doc.metadata as Obj) ?? {}; }
function spec(doc: Obj): Obj { return (doc.spec as Obj) ?? {}; }
function deps(d: Obj): string[] { return Array.isArray(d.dependsOn) ? (d.dependsOn as string[]) : []; }
function transitions(d: Obj): Obj[] { return Array.isArray(d.transitions) ? (d.transitions as Obj[]) : []; }

// Columns by longest path from the roots, rows in order (the run page's layout, for imported manifests).
function place(steps: Obj[], mode: Mode, initial?: string): { x: number; y: number }[] {
  const names = steps.map(nameOf);
  const rank: Record<string, number> = {};
  if (mode === "dag") {
    const visit = (n: string, seen: Set<string>): number => {
      if (rank[n] !== undefined) return rank[n];
      if (seen.has(n)) return 0;
      seen.add(n);
      const s = steps.find((x) => nameOf(x) === n);
      const r = s ? Math.max(-1, ...deps(s).filter((d) => names.includes(d)).map((d) => visit(d, seen))) + 1 : 0;
      rank[n] = r;
      return r;
    };
    names.forEach((n) => visit(n, new Set()));
  } else {
    const queue = initial && names.includes(initial) ? [initial] : names.slice(0, 1);
    queue.forEach((n) => (rank[n] = 0));
    while (queue.length) {
      const n = queue.shift()!;
      const s = steps.find((x) => nameOf(x) === n)!;
      for (const t of transitions(s)) {
        const target = String(t.target);
        if (names.includes(target) && rank[target] === undefined) { rank[target] = rank[n] + 1; queue.push(target); }
      }
    }
    const last = Math.max(0, ...Object.values(rank)) + 1;
    names.forEach((n) => { if (rank[n] === undefined) rank[n] = last; });
  }
  const rows: Record<number, number> = {};
  return names.map((n) => { const r = rank[n]; rows[r] = (rows[r] ?? 0) + 1; return { x: r * 260, y: (rows[r] - 1) * 110 }; });
}

const TEMPLATES: Record<string, (name: string, agent: string, prompt: string) => Obj> = {
  llm: (name, agent, prompt) => ({ name, kind: "llm", agentRef: { name: agent }, promptRef: { name: prompt }, inputs: {} }),
  tool: (name, agent) => ({ name, kind: "tool", tool: "", agentRef: { name: agent }, inputs: {} }),
  approval: (name) => ({ name, kind: "approval", approval: { message: "Approve?" } }),
  fanout: (name, agent, prompt) => ({ name, kind: "llm", agentRef: { name: agent }, promptRef: { name: prompt },
    forEach: "inputs.items", inputs: { item: "${{ item }}" } }),
};

function starterResources(): Obj[] {
  return [
    { apiVersion: API_VERSION, kind: "Agent", metadata: { name: "assistant" },
      spec: { role: "assistant", instructions: "Answer briefly.", model: { name: "openai/gpt-4o-mini" } } },
    { apiVersion: API_VERSION, kind: "PromptVersion", metadata: { name: "answer-v1" },
      spec: { prompt: "answer", version: "1", messages: [{ role: "user", content: "Answer: ${{ inputs }}" }],
        outputSchema: { type: "object", required: ["answer"], properties: { answer: { type: "string" } } } } },
  ];
}

type DesignData = { item: Item; problems: Problem[]; mode: Mode; initial: boolean };

function DesignNode({ data, selected }: NodeProps<Node<DesignData>>) {
  const d = data.item.data;
  const step = (data.mode === "fsm" ? (d.step as Obj | undefined) : d) ?? {};
  const kind = data.mode === "fsm" ? (d.final ? `final ${String(d.final)}` : step.kind ? `state · ${String(step.kind)}` : "choice state") : String(d.kind);
  return (
    <div className={`flow-node design${selected ? " selected" : ""}${data.problems.length ? " invalid" : ""}`} data-testid={`dnode-${nameOf(d)}`}>
      <Handle type="target" position={Position.Left} />
      <div className="flow-title">{nameOf(d)}{data.initial && <span className="tag">initial</span>}
        {step.forEach ? <span className="tag">fan-out</span> : null}</div>
      <div className="flow-sub"><span className="muted">{kind}</span>
        {data.problems.length > 0 && <span className="badge-error" data-testid={`problems-${nameOf(d)}`} title={data.problems.map((p) => p.message).join("\n")}>⚠ {data.problems.length}</span>}
      </div>
      <Handle type="source" position={Position.Right} />
    </div>
  );
}
const nodeTypes = { design: DesignNode };

function Canvas({ info }: { info: Info }) {
  const flow = useReactFlow();
  const [docs, setDocs] = useState<Obj[]>([{ apiVersion: API_VERSION, kind: "Workflow", metadata: { name: "my-workflow" }, spec: { steps: [] } }]);
  const [wfIndex, setWfIndex] = useState(0);
  const [mode, setMode] = useState<Mode>("dag");
  const [items, setItems] = useState<Item[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [schemas, setSchemas] = useState<Record<string, Schema> | null>(null);
  const [findings, setFindings] = useState<Findings | null>(null);
  const [yaml, setYaml] = useState("");
  const [notice, setNotice] = useState<{ kind: "error" | "ok" | "info"; text: string } | null>(null);
  const [importText, setImportText] = useState("");
  const [showImport, setShowImport] = useState(false);
  const [showExport, setShowExport] = useState(false);
  const [editDoc, setEditDoc] = useState<number | null>(null);
  const fileRef = useRef<HTMLInputElement>(null);

  useEffect(() => { api<Record<string, Schema>>("/api/schemas").then(setSchemas, (e) => setNotice({ kind: "error", text: e.message })); }, []);

  const workflow = docs[wfIndex];
  const names = (kind: string) => docs.filter((d) => d.kind === kind).map((d) => String(meta(d).name ?? ""));

  // The manifests as they would be exported: the Workflow's steps (or states) are the canvas' nodes, in order.
  const documents = useMemo(() => docs.map((d, i) => {
    if (i !== wfIndex) return d;
    const s = { ...spec(d) };
    if (mode === "dag") {
      s.steps = items.map((it) => it.data);
    } else {
      s.stateMachine = { ...((s.stateMachine as Obj) ?? {}), states: items.map((it) => it.data) };
      if (!(s.stateMachine as Obj).initial && items.length) (s.stateMachine as Obj).initial = nameOf(items[0].data);
    }
    return { ...d, spec: s };
  }), [docs, wfIndex, items, mode]);

  // Every change is exported and validated by the server (the same function as `agentflow validate`).
  useEffect(() => {
    const timer = setTimeout(() => {
      api<Findings & { yaml: string }>("/api/manifests/export", { documents }).then((r) => { setYaml(r.yaml); setFindings(r); },
        (e) => setNotice({ kind: "error", text: e.message }));
    }, 250);
    return () => clearTimeout(timer);
  }, [documents]);

  const wfName = String(meta(workflow).name ?? "");
  const problemsOf = useCallback((node: string) => (findings?.problems ?? []).filter(
    (p) => p.kind === "Workflow" && p.name === wfName && p.node === node), [findings, wfName]);

  const byName = useMemo(() => Object.fromEntries(items.map((it) => [nameOf(it.data), it.id])), [items]);
  const initial = mode === "fsm" ? String(((spec(workflow).stateMachine as Obj) ?? {}).initial ?? (items[0] ? nameOf(items[0].data) : "")) : "";

  const nodes: Node<DesignData>[] = items.map((it) => ({
    id: it.id, type: "design", position: it.position, measured: it.measured, selected: it.id === selected,
    data: { item: it, problems: problemsOf(nameOf(it.data)), mode, initial: mode === "fsm" && nameOf(it.data) === initial },
  }));
  const edges: Edge[] = [];
  for (const it of items) {
    if (mode === "dag") {
      deps(it.data).forEach((d) => { if (byName[d]) edges.push({ id: `${byName[d]}>${it.id}>${d}`, source: byName[d], target: it.id, markerEnd: { type: MarkerType.ArrowClosed } }); });
    } else {
      transitions(it.data).forEach((t, i) => {
        const target = byName[String(t.target)];
        if (target) edges.push({ id: `${it.id}>${i}`, source: it.id, target, label: `${String(t.result ?? "success")}${t.when ? `: ${String(t.when)}` : ""}`, markerEnd: { type: MarkerType.ArrowClosed } });
      });
    }
  }

  const updateItem = (id: string, data: Obj) => setItems((all) => {
    const before = all.find((x) => x.id === id);
    const oldName = before ? nameOf(before.data) : "";
    const newName = nameOf(data);
    return all.map((x) => {
      if (x.id === id) return { ...x, data };
      if (oldName === newName || !oldName) return x;
      // A rename: the edges follow (dependsOn, transition targets).
      const d = { ...x.data };
      if (Array.isArray(d.dependsOn)) d.dependsOn = (d.dependsOn as string[]).map((n) => (n === oldName ? newName : n));
      if (Array.isArray(d.transitions)) d.transitions = (d.transitions as Obj[]).map((t) => (t.target === oldName ? { ...t, target: newName } : t));
      return { ...x, data: d };
    });
  });

  const freshName = (base: string) => {
    const taken = new Set(items.map((i) => nameOf(i.data)));
    let n = 1;
    while (taken.has(`${base}-${n}`)) n++;
    return `${base}-${n}`;
  };

  const add = (kind: string, position: { x: number; y: number }) => {
    const agent = names("Agent")[0] ?? "";
    const prompt = names("PromptVersion")[0] ?? "";
    let data: Obj;
    if (mode === "dag") {
      data = TEMPLATES[kind](freshName(kind === "fanout" ? "fanout" : kind), agent, prompt);
    } else if (kind === "final") {
      data = { name: freshName("done"), final: "Succeeded" };
    } else if (kind === "choice") {
      data = { name: freshName("choice"), transitions: [] };
    } else {
      const step = TEMPLATES[kind](freshName(kind), agent, prompt);
      data = { name: step.name, step: { ...step, name: step.name }, transitions: [] };
    }
    const item = { id: uid(), data, position };
    setItems((all) => [...all, item]);
    setSelected(item.id);
  };

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    const kind = e.dataTransfer.getData("application/agentflow-node");
    if (!kind) return;
    add(kind, flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }));
  };

  const ancestors = (name: string, seen = new Set<string>()): Set<string> => {
    const it = items.find((x) => nameOf(x.data) === name);
    for (const d of it ? deps(it.data) : []) if (!seen.has(d)) { seen.add(d); ancestors(d, seen); }
    return seen;
  };

  const onConnect = (c: Connection) => {
    const source = items.find((x) => x.id === c.source);
    const target = items.find((x) => x.id === c.target);
    if (!source || !target) return;
    const s = nameOf(source.data), t = nameOf(target.data);
    if (mode === "dag") {
      if (s === t || ancestors(s).has(t)) {
        setNotice({ kind: "error", text: `refused: ${s} → ${t} would make a cycle (${t} already runs before ${s}); dependsOn must form a DAG` });
        return;
      }
      if (deps(target.data).includes(s)) return;
      updateItem(target.id, { ...target.data, dependsOn: [...deps(target.data), s] });
    } else {
      if (source.data.final) { setNotice({ kind: "error", text: `refused: ${s} is a final state and has no transitions` }); return; }
      updateItem(source.id, { ...source.data, transitions: [...transitions(source.data), { target: t }] });
    }
    setNotice(null);
  };

  const onNodesChange = (changes: NodeChange<Node<DesignData>>[]) => {
    const removed = new Set(changes.filter((c) => c.type === "remove").map((c) => c.id));
    setItems((all) => {
      const moved = applyNodeChanges(changes.filter((c) => c.type === "position" || c.type === "dimensions"),
        all.map((it) => ({ id: it.id, position: it.position, measured: it.measured, data: {} })));
      const gone = new Set(all.filter((it) => removed.has(it.id)).map((it) => nameOf(it.data)));
      return all.filter((it) => !removed.has(it.id)).map((it) => {
        const d = { ...it.data };
        if (gone.size && Array.isArray(d.dependsOn)) { d.dependsOn = deps(d).filter((n) => !gone.has(n)); if (!deps(d).length) delete d.dependsOn; }
        if (gone.size && Array.isArray(d.transitions)) d.transitions = transitions(d).filter((t) => !gone.has(String(t.target)));
        const m = moved.find((x) => x.id === it.id);
        return { ...it, data: d, position: m?.position ?? it.position, measured: m?.measured ?? it.measured };
      });
    });
    if (selected && removed.has(selected)) setSelected(null);
  };

  const onEdgesChange = (changes: EdgeChange[]) => {
    for (const c of changes) {
      if (c.type !== "remove") continue;
      const edge = edges.find((e) => e.id === c.id);
      if (!edge) continue;
      const source = items.find((x) => x.id === edge.source)!;
      const target = items.find((x) => x.id === edge.target)!;
      if (mode === "dag") {
        const left = deps(target.data).filter((d) => d !== nameOf(source.data));
        const data: Obj = { ...target.data, dependsOn: left };
        if (!left.length) delete data.dependsOn;
        updateItem(target.id, data);
      } else {
        const index = Number(edge.id.split(">")[1]);
        updateItem(source.id, { ...source.data, transitions: transitions(source.data).filter((_, i) => i !== index) });
      }
    }
  };

  const load = (documents: Obj[]) => {
    const index = documents.findIndex((d) => d.kind === "Workflow");
    if (index < 0) { setNotice({ kind: "error", text: "no Workflow in these manifests: add one (kind: Workflow)" }); return false; }
    const wf = documents[index];
    const s = spec(wf);
    const sm = s.stateMachine as Obj | undefined;
    const m: Mode = sm && Array.isArray(sm.states) ? "fsm" : "dag";
    const list = (m === "dag" ? (s.steps as Obj[] | undefined) : (sm!.states as Obj[])) ?? [];
    if (!Array.isArray(list) || list.some((x) => typeof x !== "object" || x === null)) {
      setNotice({ kind: "error", text: `${m === "dag" ? "spec.steps" : "spec.stateMachine.states"} must be a list of objects` });
      return false;
    }
    const places = place(list, m, sm ? String(sm.initial ?? "") : undefined);
    setDocs(documents.map(clone));
    setWfIndex(index);
    setMode(m);
    setItems(list.map((data, i) => ({ id: uid(), data: clone(data), position: places[i] })));
    setSelected(null);
    setTimeout(() => void flow.fitView({ maxZoom: 1 }), 100);
    return true;
  };

  const doImport = async (text: string) => {
    setNotice(null);
    try {
      const r = await api<{ documents: Obj[]; problems: Problem[] }>("/api/manifests/parse", { yaml: text });
      if (r.problems.length) { setNotice({ kind: "error", text: r.problems.map((p) => p.text).join("\n") }); return; }
      if (load(r.documents)) { setShowImport(false); setNotice({ kind: "ok", text: `imported ${r.documents.length} manifest(s)` }); }
    } catch (e) {
      setNotice({ kind: "error", text: (e as Error).message });
    }
  };

  const runLocally = async () => {
    try {
      const r = await api<{ run: string }>("/api/runs", { yaml, workflow: wfName });
      go(`runs/${encodeURIComponent(r.run)}`);
    } catch (e) {
      setNotice({ kind: "error", text: (e as Error).message });
    }
  };

  const switchMode = (m: Mode) => {
    if (m === mode) return;
    if (items.length && !window.confirm("Switching between a DAG and a state machine clears the canvas. Continue?")) return;
    setItems([]);
    setMode(m);
    setDocs((all) => all.map((d, i) => (i === wfIndex ? { ...d, spec: m === "dag" ? { steps: [] } : { stateMachine: { initial: "", states: [] } } } : d)));
  };

  const sel = items.find((x) => x.id === selected);
  const wfSchema = schemas?.Workflow;
  const stepSchema = wfSchema?.properties?.spec?.properties?.steps?.items;
  const stateSchema = wfSchema?.properties?.spec?.properties?.stateMachine?.properties?.states?.items;
  const errorsOf = (ps: Problem[]) => {
    const out: Record<string, string[]> = {};
    for (const p of ps) (out[p.field ?? ""] ??= []).push(p.message);
    return out;
  };
  const suggest = { "agentRef.name": names("Agent"), "promptRef.name": names("PromptVersion"), "step.agentRef.name": names("Agent"), "step.promptRef.name": names("PromptVersion") };
  const loose = (findings?.problems ?? []).filter((p) => !(p.kind === "Workflow" && p.name === wfName && p.node));
  const palette = mode === "dag"
    ? [["llm", "LLM step"], ["tool", "Tool step"], ["approval", "Approval"], ["fanout", "Fan-out (forEach)"]]
    : [["llm", "State: LLM"], ["tool", "State: tool"], ["approval", "State: approval"], ["choice", "Choice state"], ["final", "Final state"]];

  return (
    <div className="designer" data-testid="designer">
      <div className="toolbar">
        <select data-testid="mode" value={mode} onChange={(e) => switchMode(e.target.value as Mode)}>
          <option value="dag">DAG (dependsOn)</option><option value="fsm">State machine (transitions)</option>
        </select>
        <button data-testid="import-open" onClick={() => setShowImport(!showImport)}>Import…</button>
        <button data-testid="starter" onClick={() => setDocs((all) => [...all, ...starterResources().filter((r) => !all.some((d) => d.kind === r.kind && meta(d).name === meta(r).name))])}>
          + Agent & PromptVersion</button>
        <button data-testid="export-open" onClick={() => setShowExport(!showExport)}>Export YAML</button>
        {info.canStart && <button data-testid="run-local" disabled={!findings?.ok} onClick={runLocally}>Run locally</button>}
        <span className={`validity ${findings?.ok ? "ok" : "bad"}`} data-testid="validity">
          {findings ? (findings.ok ? "valid" : `${findings.problems.length} problem(s)`) : "…"}</span>
      </div>
      {notice && <Alert kind={notice.kind} onClose={() => setNotice(null)}><pre className="plain">{notice.text}</pre></Alert>}
      {showImport && (
        <div className="panel import">
          <p>Paste manifests (a Workflow and what it refers to) or choose a file.</p>
          <textarea data-testid="import-text" rows={10} value={importText} onChange={(e) => setImportText(e.target.value)} />
          <input type="file" ref={fileRef} data-testid="import-file" accept=".yaml,.yml"
                 onChange={async (e) => { const f = e.target.files?.[0]; if (f) await doImport(await f.text()); }} />
          <button data-testid="import" onClick={() => doImport(importText)}>Import</button>
        </div>
      )}
      {showExport && (
        <div className="panel export">
          <textarea data-testid="yaml" rows={14} readOnly value={yaml} />
          <div className="actions">
            <button onClick={() => navigator.clipboard?.writeText(`kubectl apply -f - <<'EOF'\n${yaml}EOF\n`)}>Copy kubectl apply</button>
            <a download={`${wfName || "workflow"}.yaml`} href={`data:application/yaml;charset=utf-8,${encodeURIComponent(yaml)}`} data-testid="download">Download</a>
            <code className="muted">kubectl apply -f {wfName || "workflow"}.yaml</code>
          </div>
        </div>
      )}
      <div className="design-body">
        <aside className="palette">
          <h4>Drag onto the canvas</h4>
          {palette.map(([kind, label]) => (
            <div key={kind} className="palette-item" draggable data-testid={`palette-${kind}`}
                 onDragStart={(e) => { e.dataTransfer.setData("application/agentflow-node", kind); e.dataTransfer.effectAllowed = "move"; }}
                 onDoubleClick={() => add(kind, { x: 40 + items.length * 40, y: 40 + items.length * 30 })}>{label}</div>
          ))}
          <h4>Resources</h4>
          {docs.map((d, i) => (
            <div key={i} className={`doc-item${i === wfIndex ? " current" : ""}`}>
              <button className="link" onClick={() => { setEditDoc(i); setSelected(null); }}>{String(d.kind)}/{String(meta(d).name ?? "?")}</button>
              {i !== wfIndex && <button className="link" aria-label="remove" onClick={() => { setDocs((all) => all.filter((_, j) => j !== i)); if (i < wfIndex) setWfIndex(wfIndex - 1); setEditDoc(null); }}>×</button>}
            </div>
          ))}
        </aside>
        <div className="flow" onDrop={onDrop} onDragOver={(e) => { e.preventDefault(); e.dataTransfer.dropEffect = "move"; }} data-testid="canvas">
          <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} onNodesChange={onNodesChange} onEdgesChange={onEdgesChange}
                     onConnect={onConnect} onNodeClick={(_, n) => { setSelected(n.id); setEditDoc(null); }} onPaneClick={() => setSelected(null)}
                     deleteKeyCode={["Delete", "Backspace"]} proOptions={{ hideAttribution: true }}
                     defaultViewport={{ x: 0, y: 0, zoom: 1 }} maxZoom={1.5}>
            <Background /><Controls />
          </ReactFlow>
        </div>
        <aside className="panel props" data-testid="props">
          {sel && schemas ? (
            <>
              <h3>{nameOf(sel.data)}</h3>
              {problemsOf(nameOf(sel.data)).filter((p) => !p.field).map((p, i) => <div key={i} className="field-error">{p.message}</div>)}
              <SchemaForm schema={(mode === "dag" ? stepSchema : stateSchema) ?? {}} value={sel.data} errors={errorsOf(problemsOf(nameOf(sel.data)))}
                          hide={["dependsOn", "transitions"]} suggest={suggest}
                          onChange={(d) => { if (typeof d.name === "string" && d.name && !NAME.test(d.name)) setNotice({ kind: "info", text: `name ${d.name}: lower-case letters, digits and '-'` }); updateItem(sel.id, d); }} />
              {mode === "fsm" && (
                <section><h4>Transitions</h4>
                  {transitions(sel.data).map((t, i) => (
                    <div key={i} className="transition">→ {String(t.target)}
                      <select value={String(t.result ?? "success")} onChange={(e) => updateItem(sel.id, { ...sel.data, transitions: transitions(sel.data).map((x, j) => (j === i ? { ...x, result: e.target.value === "success" && !("result" in x) ? undefined : e.target.value } : x)) })}>
                        <option value="success">success</option><option value="error">error</option></select>
                      <input placeholder="when (CEL)" value={String(t.when ?? "")} onChange={(e) => updateItem(sel.id, { ...sel.data, transitions: transitions(sel.data).map((x, j) => { if (j !== i) return x; const y = { ...x }; if (e.target.value) y.when = e.target.value; else delete y.when; return y; }) })} />
                    </div>))}
                  <p className="muted">Drag from this state's right handle to another state to add a transition.</p>
                </section>
              )}
            </>
          ) : editDoc !== null && schemas && docs[editDoc] ? (
            <>
              <h3>{String(docs[editDoc].kind)}</h3>
              <label className="field"><span className="field-label">name *</span>
                <input data-testid="doc-name" value={String(meta(docs[editDoc]).name ?? "")}
                       onChange={(e) => setDocs((all) => all.map((d, j) => (j === editDoc ? { ...d, metadata: { ...meta(d), name: e.target.value } } : d)))} /></label>
              <SchemaForm schema={schemas[String(docs[editDoc].kind)]?.properties?.spec ?? {}} value={spec(docs[editDoc])}
                          errors={errorsOf((findings?.problems ?? []).filter((p) => p.document === editDoc).map((p) => ({ ...p, field: p.path.replace(/^spec\.?/, "") })))}
                          hide={editDoc === wfIndex ? ["steps", "stateMachine.states"] : []}
                          onChange={(s) => setDocs((all) => all.map((d, j) => (j === editDoc ? { ...d, spec: s } : d)))} />
            </>
          ) : (
            <p className="muted">Select a node to edit it, or a resource on the left. Drag from a node's right handle to another node to connect them
              ({mode === "dag" ? "the target then dependsOn the source" : "a transition"}). Delete removes the selection.</p>
          )}
        </aside>
      </div>
      <div className="problems" data-testid="problems">
        {(findings?.problems ?? []).map((p, i) => (
          <div key={i} className="problem" data-node={p.node ?? ""} onClick={() => { if (p.node && byName[p.node]) setSelected(byName[p.node]); }}>
            {p.node ? <b>{p.node}</b> : null} {p.text}</div>))}
        {findings && loose.length === 0 && findings.problems.length === 0 && <div className="muted">`agentflow validate` finds no problem.</div>}
      </div>
    </div>
  );
}

export function DesignerPage({ info }: { info: Info }) {
  return <ReactFlowProvider><Canvas info={info} /></ReactFlowProvider>;
}
