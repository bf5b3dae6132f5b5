import { useEffect, useState } from "react";
import { api, bearer, Info, setBearer } from "./api";
import { RunsPage } from "./pages/Runs";
import { RunPage } from "./pages/Run";
import { DiffPage } from "./pages/Diff";
import { DesignerPage } from "./pages/Designer";
import { AuditPage } from "./pages/Audit";
import { Alert } from "./components/Alert";

export interface Route {
  page: string;
  arg: string;
  query: URLSearchParams;
}

function parseHash(): Route {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const parts = (path || "runs").split("/");
  return { page: parts[0], arg: decodeURIComponent(parts.slice(1).join("/")), query: new URLSearchParams(qs ?? "") };
}

export function go(path: string): void {
  window.location.hash = `#/${path}`;
}

function SignIn({ onDone }: { onDone: () => void }) {
  const [token, setToken] = useState("");
  return (
    <div className="panel signin">
      <h2>Sign in to the cluster</h2>
      <p>The console acts with <b>your</b> Kubernetes identity: paste a bearer token (a ServiceAccount token from
        <code> kubectl create token NAME</code>, or your OIDC id token). It is kept in this tab only.</p>
      <textarea data-testid="token" rows={4} value={token} onChange={(e) => setToken(e.target.value.trim())} />
      <button data-testid="signin" disabled={!token} onClick={() => { setBearer(token); onDone(); }}>Sign in</button>
    </div>
  );
}

export function App() {
  const [route, setRoute] = useState<Route>(parseHash);
  const [info, setInfo] = useState<Info | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [signedIn, setSignedIn] = useState<boolean>(!!bearer());

  useEffect(() => {
    const onHash = () => setRoute(parseHash());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => {
    api<Info>("/api/info").then(setInfo, (e) => setError(String(e.message ?? e)));
  }, []);

  if (error) return <Alert kind="error">{error}</Alert>;
  if (!info) return <div className="loading">Loading…</div>;
  const needSignIn = info.signIn && !signedIn;
  const tab = (page: string, label: string) => (
    <a href={`#/${page}`} className={route.page === page ? "active" : ""} data-testid={`nav-${page}`}>{label}</a>
  );
  return (
    <div className="app" data-mode={info.mode}>
      <header className="top">
        <span className="brand">AgentFlow</span>
        <nav>
          {tab("runs", "Runs")}
          {tab("diff", "Diff")}
          {tab("designer", "Designer")}
          {tab("audit", "Audit")}
          <a href="/api/openapi.json" target="_blank" rel="noreferrer">API</a>
        </nav>
        <span className="who">
          {info.mode === "local" ? `local · ${info.user ?? ""}` : "cluster"}
          {info.signIn && signedIn && (
            <button className="link" onClick={() => { setBearer(""); setSignedIn(false); }}>sign out</button>
          )}
        </span>
      </header>
      <main>
        {needSignIn && route.page !== "designer" ? <SignIn onDone={() => setSignedIn(true)} /> : (
          <>
            {route.page === "runs" && !route.arg && <RunsPage info={info} />}
            {route.page === "runs" && route.arg && <RunPage key={route.arg} runId={route.arg} info={info} />}
            {route.page === "diff" && <DiffPage a={route.query.get("a") ?? ""} b={route.query.get("b") ?? ""} />}
            {route.page === "designer" && <DesignerPage info={info} />}
            {route.page === "audit" && <AuditPage />}
          </>
        )}
      </main>
    </div>
  );
}
