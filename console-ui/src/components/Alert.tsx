import { ReactNode } from "react";

export function Alert({ kind, children, onClose }: { kind: "error" | "info" | "ok"; children: ReactNode; onClose?: () => void }) {
  return (
    <div className={`alert alert-${kind}`} role="alert" data-testid={`alert-${kind}`}>
      <div className="alert-body">{children}</div>
      {onClose && <button className="link" onClick={onClose} aria-label="dismiss">×</button>}
    </div>
  );
}
