// A form generated from a CRD's openAPIV3Schema: one field per property, nested objects as fieldsets,
// free-form values (x-kubernetes-preserve-unknown-fields, lists of objects) as JSON. Validation findings of
// the server are shown under the field they name.
import { useEffect, useState } from "react";

export type Schema = {
  type?: string; description?: string; enum?: unknown[]; properties?: Record<string, Schema>; items?: Schema;
  required?: string[]; default?: unknown; "x-kubernetes-preserve-unknown-fields"?: boolean;
};
type Obj = Record<string, unknown>;

export function setKey(obj: Obj, key: string, value: unknown): Obj {
  const out: Obj = { ...obj };
  if (value === undefined || value === "" || (Array.isArray(value) && value.length === 0 && !(key in obj))) delete out[key];
  else out[key] = value;
  return out;
}

function JsonField({ value, onChange, testid }: { value: unknown; onChange: (v: unknown) => void; testid: string }) {
  const text = value === undefined ? "" : JSON.stringify(value, null, 1);
  const [draft, setDraft] = useState(text);
  const [bad, setBad] = useState<string | null>(null);
  useEffect(() => setDraft(text), [text]);
  return (
    <>
      <textarea data-testid={testid} rows={Math.min(8, Math.max(2, draft.split("\n").length))} value={draft}
                onChange={(e) => setDraft(e.target.value)}
                onBlur={() => {
                  if (!draft.trim()) { setBad(null); onChange(undefined); return; }
                  try { onChange(JSON.parse(draft)); setBad(null); } catch (e) { setBad(`not JSON: ${(e as Error).message}`); }
                }} />
      {bad && <div className="field-error">{bad}</div>}
    </>
  );
}

function isFreeForm(s: Schema): boolean {
  return !!s["x-kubernetes-preserve-unknown-fields"] || (s.type === "object" && !s.properties) ||
    (s.type === "array" && !!s.items && (s.items.type === "object" || s.items.type === "array"));
}

export function SchemaForm({ schema, value, onChange, errors, path = "", hide = [], suggest = {} }: {
  schema: Schema; value: Obj; onChange: (v: Obj) => void; errors: Record<string, string[]>; path?: string;
  hide?: string[]; suggest?: Record<string, string[]>;
}) {
  const props = schema.properties ?? {};
  return (
    <div className="schema-form">
      {Object.entries(props).map(([key, s]) => {
        const here = path ? `${path}.${key}` : key;
        if (hide.includes(here)) return null;
        const v = value[key];
        const errs = Object.entries(errors).filter(([p]) => p === here || p.startsWith(`${here}.`) || p.startsWith(`${here}[`)).flatMap(([, m]) => m);
        const required = schema.required?.includes(key);
        const label = <span className="field-label" title={s.description}>{key}{required ? " *" : ""}</span>;
        const set = (nv: unknown) => onChange(setKey(value, key, nv));
        const testid = `field-${here}`;
        let input;
        if (s.type === "object" && s.properties && !s["x-kubernetes-preserve-unknown-fields"]) {
          return (
            <fieldset key={key} className={errs.length ? "has-error" : ""}>
              <legend title={s.description}>{key}{required ? " *" : ""}</legend>
              <SchemaForm schema={s} value={(v as Obj) ?? {}} path={here} errors={errors} hide={hide} suggest={suggest}
                          onChange={(nv) => set(Object.keys(nv).length ? nv : undefined)} />
            </fieldset>
          );
        } else if (isFreeForm(s)) {
          input = <JsonField value={v} onChange={set} testid={testid} />;
        } else if (s.enum) {
          input = (
            <select data-testid={testid} value={v === undefined ? "" : String(v)} onChange={(e) => set(e.target.value || undefined)}>
              <option value="">{s.default !== undefined ? `(default ${String(s.default)})` : ""}</option>
              {s.enum.map((o) => <option key={String(o)} value={String(o)}>{String(o)}</option>)}
            </select>
          );
        } else if (s.type === "boolean") {
          input = <input type="checkbox" data-testid={testid} checked={v === true} onChange={(e) => set(e.target.checked ? true : undefined)} />;
        } else if (s.type === "integer" || s.type === "number") {
          input = <input type="number" data-testid={testid} value={v === undefined ? "" : String(v)} placeholder={s.default !== undefined ? String(s.default) : ""}
                         onChange={(e) => set(e.target.value === "" ? undefined : Number(e.target.value))} />;
        } else if (s.type === "array") {
          input = <input data-testid={testid} value={Array.isArray(v) ? v.join(", ") : ""} placeholder="a, b, c"
                         onChange={(e) => set(e.target.value.split(",").map((x) => x.trim()).filter(Boolean))} />;
        } else {
          const list = suggest[here];
          input = (
            <>
              <input data-testid={testid} value={v === undefined ? "" : String(v)} list={list ? `dl-${here}` : undefined}
                     onChange={(e) => set(e.target.value === "" ? undefined : e.target.value)} />
              {list && <datalist id={`dl-${here}`}>{list.map((o) => <option key={o} value={o} />)}</datalist>}
            </>
          );
        }
        return (
          <label key={key} className={`field${errs.length ? " has-error" : ""}`}>
            {label}{input}
            {errs.map((m, i) => <div key={i} className="field-error" data-testid="field-error">{m}</div>)}
          </label>
        );
      })}
    </div>
  );
}
