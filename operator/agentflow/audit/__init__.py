"""The audit chain: records of model calls, tool calls, approvals and policy decisions, hash-chained. Pure."""
