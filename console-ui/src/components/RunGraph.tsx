import { memo, useEffect, useMemo } from "react";
import { Background, Controls, Edge, Handle, MarkerType, MiniMap, Node, NodeProps, Position, ReactFlow, useReactFlow } from "@xyflow/react";
import { GraphEdge, GraphNode, NodeState } from "../api";

export const COLUMN = 240;
export const ROW = 96;
const NODE_WIDTH = 200;
const NODE_HEIGHT = 56;
const BIG = 400; // past this many nodes: no fit-to-view at load (it would draw them all at once), no minimap

type StepData = { node: GraphNode; state: NodeState; selected: boolean };

const KIND_ICON: Record<string, string> = { llm: "LLM", tool: "TOOL", approval: "APPROVAL", state: "STATE" };

function counts(state: NodeState): string {
  if (!state.counts) return "";
  const order = ["Succeeded", "Running", "Waiting", "Failed", "Pending", "Retrying", "Skipped", "Cancelled"];
  return order.filter((p) => state.counts![p]).map((p) => `${state.counts![p]} ${p.toLowerCase()}`).join(", ");
}

const StepNode = memo(function StepNode({ data }: NodeProps<Node<StepData>>) {
  const { node, state } = data;
  const kind = node.kind === "state" ? (node.stepKind ?? "state") : node.kind;
  return (
    <div className={`flow-node phase-${state.phase}${data.selected ? " selected" : ""}`} data-testid={`node-${node.id}`}
         data-phase={state.phase} title={state.message ?? ""}>
      <Handle type="target" position={Position.Left} />
      <div className="flow-title"><span className="icon">{KIND_ICON[kind] ?? kind}</span>{node.label}
        {node.fanOut && <span className="tag">fan-out</span>}
        {node.gate && <span className="tag">approval gate</span>}
        {node.initial && <span className="tag">initial</span>}
        {node.final && <span className="tag">final: {node.final}</span>}
      </div>
      <div className="flow-sub">
        <span className={`phase phase-${state.phase}`}>{state.phase}</span>
        {state.items !== undefined && <span className="items" data-testid={`items-${node.id}`}>{state.items} items {counts(state)}</span>}
        {state.visits ? <span className="items">×{state.visits} visits</span> : null}
        {state.attempts > 1 && <span className="muted">try {state.attempts}</span>}
      </div>
      <Handle type="source" position={Position.Right} />
    </div>
  );
});

const nodeTypes = { step: StepNode };

// A small graph is re-fitted when the space it has changes (the node panel opens or closes).
function Refit({ panelOpen }: { panelOpen: boolean }) {
  const flow = useReactFlow();
  useEffect(() => {
    const timer = setTimeout(() => void flow.fitView({ duration: 0, maxZoom: 1 }), 50);
    return () => clearTimeout(timer);
  }, [panelOpen, flow]);
  return null;
}

export function RunGraph({ nodes, edges, states, selected, onSelect }: {
  nodes: GraphNode[];
  edges: GraphEdge[];
  states: Record<string, NodeState>;
  selected: string | null;
  onSelect: (id: string) => void;
}) {
  const big = nodes.length > BIG;
  const flowNodes = useMemo<Node<StepData>[]>(
    () => nodes.map((n) => ({
      // Sizes given up front: React Flow then culls by them, instead of drawing every node once to measure it.
      id: n.id, type: "step", position: { x: n.rank * COLUMN, y: n.row * ROW }, width: NODE_WIDTH, height: NODE_HEIGHT,
      data: { node: n, state: states[n.id] ?? n.state, selected: n.id === selected },
      draggable: false, connectable: false,
    })),
    [nodes, states, selected],
  );
  const flowEdges = useMemo<Edge[]>(
    () => edges.map((e) => {
      const target = states[e.target]?.phase;
      return {
        id: e.id, source: e.source, target: e.target, label: e.label ?? undefined,
        animated: target === "Running", markerEnd: { type: MarkerType.ArrowClosed },
        className: e.kind === "transition" ? "edge-transition" : "edge-dep",
      };
    }),
    [edges, states],
  );
  return (
    <div className="flow" data-testid="graph" data-nodes={nodes.length}>
      <ReactFlow nodes={flowNodes} edges={flowEdges} nodeTypes={nodeTypes} onlyRenderVisibleElements={big}
                 fitView={!big} fitViewOptions={{ maxZoom: 1 }} minZoom={0.05} nodesDraggable={false} nodesConnectable={false}
                 defaultViewport={{ x: 20, y: 20, zoom: 0.9 }} onNodeClick={(_, n) => onSelect(n.id)}
                 proOptions={{ hideAttribution: true }}>
        <Background />
        <Controls showInteractive={false} />
        {!big && <MiniMap pannable zoomable />}
        {!big && <Refit panelOpen={selected !== null} />}
      </ReactFlow>
    </div>
  );
}
