"""The kopf operator: thin handlers over agentflow.services (`agentflow operator`)."""
