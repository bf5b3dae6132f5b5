export function Phase({ phase }: { phase: string }) {
  return <span className={`phase phase-${phase}`} data-testid="phase">{phase}</span>;
}

export function Progress({ done, total }: { done: number; total: number }) {
  const pct = total ? Math.round((100 * done) / total) : 0;
  return (
    <span className="progress" title={`${done}/${total}`}>
      <span className="bar"><span style={{ width: `${pct}%` }} /></span>
      <span className="num">{done}/{total}</span>
    </span>
  );
}
