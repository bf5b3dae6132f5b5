"""The secure context layer: PII redaction with reversible tokens, prompt-injection detection."""
