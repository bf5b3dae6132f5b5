import { useEffect, useState } from "react";
import { api } from "../api";
import { Alert } from "../components/Alert";
import { Json } from "../components/Json";

interface Audit {
  source: string; rows: Record<string, unknown>[]; total?: number; note?: string;
  report: { ok: boolean; checked?: number; head?: { seq: number; hash: string }; problem?: { message: string } | null } | null;
}

export function AuditPage() {
  const [audit, setAudit] = useState<Audit | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => { api<Audit>("/api/audit").then(setAudit, (e) => setError(e.message)); }, []);
  if (error) return <Alert kind="error">{error}</Alert>;
  if (!audit) return <div className="loading">Loading…</div>;
  return (
    <div className="page audit">
      <h2>Audit chain</h2>
      <p className="muted">{audit.source}</p>
      {audit.note && <Alert kind="info">{audit.note}</Alert>}
      {audit.report && (audit.report.ok
        ? <Alert kind="ok">Chain intact: {audit.report.checked} rows verified, head {audit.report.head?.seq} {audit.report.head?.hash.slice(0, 16)}…</Alert>
        : <Alert kind="error">Chain TAMPERED: {audit.report.problem?.message}</Alert>)}
      {audit.rows.length > 0 && (
        <table className="grid">
          <thead><tr><th>seq</th><th>kind</th><th>subject</th><th>details</th></tr></thead>
          <tbody>{audit.rows.slice().reverse().map((r, i) => (
            <tr key={i}><td>{String(r.seq)}</td><td>{String(r.kind ?? r.type ?? "")}</td><td>{String(r.subject ?? r.workflow ?? "")}</td>
              <td><details><summary>row</summary><Json value={r} /></details></td></tr>))}</tbody>
        </table>
      )}
    </div>
  );
}
