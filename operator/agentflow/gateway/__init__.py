"""The LLM gateway: OpenAI-compatible, budget-enforcing, caching, routing model calls for step attempts."""
