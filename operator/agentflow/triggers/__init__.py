"""WorkflowTriggers over HTTP: deliveries authenticated (auth.py, pure), mapped and started (server.py)."""
