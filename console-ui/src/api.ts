// The console's HTTP API (GET /api/openapi.json documents it). Local: mutating calls carry the page's
// per-process token. Cluster: every call carries the signed-in user's bearer token, so RBAC decides.

export type Phase = string;

export interface NodeState {
  phase: Phase;
  attempts: number;
  startedAt: number | string | null;
  finishedAt: number | string | null;
  costUsd: number;
  tokens: number;
  message: string | null;
  counts?: Record<string, number>;
  items?: number;
  visits?: number;
  visitIds?: string[];
}

export interface GraphNode {
  id: string;
  kind: string;
  stepKind?: string | null;
  label: string;
  rank: number;
  row: number;
  fanOut: boolean;
  gate: boolean;
  when?: string | null;
  final?: string | null;
  initial?: boolean;
  state: NodeState;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  kind: "dependsOn" | "transition";
  label: string | null;
}

export interface RunSummary {
  runId: string;
  workflow: string;
  mode?: string;
  phase: Phase;
  finished?: boolean;
  reason: string | null;
  progress: { done: number; total: number };
  costUsd: number;
  tokens: number;
  startedAt: number | string | null;
  finishedAt: number | string | null;
  created?: number | string | null;
  namespace?: string | null;
  labels?: Record<string, string>;
  waiting?: string[];
  waitingCount?: number;
  failed?: string[];
  failedCount?: number;
  outputs?: unknown;
  traceId?: string | null;
  driving?: boolean;
}

export interface RunGraph {
  run: RunSummary;
  nodes: GraphNode[];
  edges: GraphEdge[];
  seq: number;
}

export interface Update {
  seq: number;
  run: RunSummary;
  nodes: Record<string, NodeState>;
}

export interface Problem {
  source: string;
  line: number | null;
  path: string;
  message: string;
  text: string;
  document: number | null;
  kind: string | null;
  name: string | null;
  node: string | null;
  field: string | null;
}

export interface Findings {
  ok: boolean;
  resources: string[];
  problems: Problem[];
}

export interface Info {
  mode: "local" | "cluster";
  user: string | null;
  canStart: boolean;
  canResume: boolean;
  signIn: boolean;
}

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

function meta(name: string): string {
  return document.querySelector<HTMLMetaElement>(`meta[name="${name}"]`)?.content ?? "";
}

export const pageToken = meta("agentflow-token");
const TOKEN_KEY = "agentflow.bearer";

export function bearer(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setBearer(token: string): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(json: boolean): Record<string, string> {
  const h: Record<string, string> = {};
  if (json) h["Content-Type"] = "application/json";
  if (pageToken) h["X-AgentFlow-Token"] = pageToken;
  const b = bearer();
  if (b) h["Authorization"] = `Bearer ${b}`;
  return h;
}

export async function api<T>(path: string, body?: unknown, method?: string): Promise<T> {
  const init: RequestInit = { method: method ?? (body === undefined ? "GET" : "POST"), headers: headers(body !== undefined) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response: Response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the console server cannot be reached (${String(e)}); is agentflow ui still running?`);
  }
  const text = await response.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };
  }
  if (!response.ok) {
    const message = (data as { error?: string } | null)?.error ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return data as T;
}

// Server-sent events over fetch (so the bearer token can be sent). Reconnects from the last seq seen.
export function stream(path: string, after: number, onUpdate: (u: Update) => void, onEnd: () => void,
                       onError: (message: string) => void): () => void {
  const controller = new AbortController();
  let last = after;
  let stopped = false;
  const run = async (): Promise<void> => {
    while (!stopped) {
      try {
        const response = await fetch(`${path}?after=${last}`, { headers: headers(false), signal: controller.signal });
        if (!response.ok || !response.body) {
          const text = await response.text();
          let message = text;
          try { message = JSON.parse(text).error ?? text; } catch { /* plain text */ }
          onError(message);
          if (response.status >= 400 && response.status < 500) return;
        } else {
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += decoder.decode(value, { stream: true });
            let cut: number;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, cut);
              buffer = buffer.slice(cut + 2);
              let event = "message";
              const data: string[] = [];
              for (const line of block.split("\n")) {
                if (line.startsWith("event: ")) event = line.slice(7);
                else if (line.startsWith("data: ")) data.push(line.slice(6));
              }
              if (event === "update") {
                const update = JSON.parse(data.join("\n")) as Update;
                last = update.seq;
                onUpdate(update);
              } else if (event === "end") {
                onEnd();
                return;
              } else if (event === "failure") {
                onError(JSON.parse(data.join("\n")).error);
                return;
              }
            }
          }
        }
      } catch (e) {
        if (stopped) return;
        onError(`live updates interrupted (${String(e)}); reconnecting`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  void run();
  return () => {
    stopped = true;
    controller.abort();
  };
}

export function fmtCost(usd: number | undefined): string {
  return `$${(usd ?? 0).toFixed(4)}`;
}

export function toSeconds(t: number | string | null | undefined): number | null {
  if (t === null || t === undefined) return null;
  if (typeof t === "number") return t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms / 1000;
}

export function fmtDuration(start: number | string | null | undefined, end: number | string | null | undefined): string {
  const a = toSeconds(start);
  if (a === null) return "";
  const b = toSeconds(end) ?? Date.now() / 1000;
  const s = Math.max(0, b - a);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function fmtAge(t: number | string | null | undefined): string {
  const a = toSeconds(t);
  if (a === null) return "";
  const s = Math.max(0, Date.now() / 1000 - a);
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  if (s < 86400) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}
