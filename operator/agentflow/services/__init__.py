"""Services: the operator's business logic, with clients passed in (no kopf here)."""
