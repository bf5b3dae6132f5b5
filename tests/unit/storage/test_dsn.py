"""What the store prints of a DSN: never the password."""

from __future__ import annotations

import pytest

from agentflow.storage.postgres import redact_dsn


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://op:s3cret@db.svc:5432/agentflow", "postgresql://op:***@db.svc:5432/agentflow"),
        ("postgres://op:s3cret@db/agentflow?sslmode=require", "postgres://op:***@db/agentflow?sslmode=require"),
        ("postgresql://op:s3cret@[::1]:5432/agentflow", "postgresql://op:***@[::1]:5432/agentflow"),
        ("postgresql://op@db/agentflow", "postgresql://op@db/agentflow"),
        ("host=db user=op password=s3cret dbname=agentflow", "host=db user=op password=*** dbname=agentflow"),
        ("host=db password='s3 cr\\'et' dbname=x", "host=db password=*** dbname=x"),
    ],
)
def test_the_password_is_never_shown(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert "s3" not in redact_dsn(dsn)
