"""Commands with flags of their own (``agentflow gateway|cost|audit|screen|redact``), routed from agentflow.cli.

Each module exposes ``main(argv) -> int`` and builds its clients from its flags at start, never at import.
"""
