"""AgentFlow: multi-agent LLM workflows on Kubernetes, and locally with the same engine."""

__version__ = "0.1.0"
