import { ReactNode, useState } from "react";

// Renders only the rows in view (fixed row height), so a list of thousands of nodes or items stays fast.
export function VirtualList<T>({ items, rowHeight, height, render, testid }: {
  items: T[];
  rowHeight: number;
  height: number;
  render: (item: T, index: number) => ReactNode;
  testid?: string;
}) {
  const [top, setTop] = useState(0);
  const first = Math.max(0, Math.floor(top / rowHeight) - 5);
  const last = Math.min(items.length, Math.ceil((top + height) / rowHeight) + 5);
  const rows: ReactNode[] = [];
  for (let i = first; i < last; i++) {
    rows.push(
      <div key={i} className="vrow" style={{ position: "absolute", top: i * rowHeight, height: rowHeight, left: 0, right: 0 }}>
        {render(items[i], i)}
      </div>,
    );
  }
  return (
    <div className="vlist" data-testid={testid} data-count={items.length} style={{ height, overflowY: "auto", position: "relative" }}
         onScroll={(e) => setTop((e.target as HTMLDivElement).scrollTop)}>
      <div style={{ height: items.length * rowHeight, position: "relative" }}>{rows}</div>
    </div>
  );
}
