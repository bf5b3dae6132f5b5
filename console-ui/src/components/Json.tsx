export function Json({ value }: { value: unknown }) {
  if (value === null || value === undefined) return <span className="muted">none</span>;
  const v = value as { truncated?: boolean; bytes?: number; preview?: string };
  if (v && typeof v === "object" && v.truncated) {
    return (
      <div>
        <div className="muted">{v.bytes} bytes: the first part is shown (agentflow show RUN --json has all of it)</div>
        <pre className="json">{v.preview}</pre>
      </div>
    );
  }
  return <pre className="json">{typeof value === "string" ? value : JSON.stringify(value, null, 2)}</pre>;
}
