"""The pure workflow engine: plans, runs, expressions and the journal. No I/O here."""
