"""JSON Schema checks never fetch a $ref: a server the schema points to sees no request, and the check says which
reference it could not resolve. References inside the schema resolve."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest

from agentflow.engine.schemas import expansion_problem, is_valid, local_validator, schema_errors
from agentflow.models import Assertion
from agentflow.prompts.assertions import check


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A server on loopback that records every request and answers a schema."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = b'{"type": "string"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_ref_is_never_fetched_and_is_named(listener: tuple[str, list[str]]) -> None:
    url, seen = listener
    schema = {"type": "object", "properties": {"q": {"$ref": f"{url}/s.json"}}}
    with pytest.raises(jsonschema.SchemaError, match=r"\$ref '.*/s.json' cannot be resolved"):
        schema_errors(schema, {"q": 1})
    assert not is_valid(schema, {"q": "x"})
    assert seen == []


def test_an_assertion_with_a_remote_ref_fails_that_assertion_only(listener: tuple[str, list[str]]) -> None:
    url, seen = listener
    verdict = check(Assertion.model_validate({"jsonSchema": {"$ref": f"{url}/s.json"}}), "x", {})
    assert verdict.passed is False and "cannot be resolved" in verdict.detail
    assert seen == []


def test_references_inside_the_schema_resolve_and_bad_schemas_are_schema_errors() -> None:
    schema = {"$defs": {"s": {"type": "string"}}, "properties": {"q": {"$ref": "#/$defs/s"}}}
    assert [e.message for e in schema_errors(schema, {"q": 1})] == ["1 is not of type 'string'"]
    assert schema_errors(schema, {"q": "x"}) == []
    with pytest.raises(jsonschema.SchemaError):
        local_validator({"type": 7})
    assert not is_valid({"type": 7}, 1)


def exploding(levels: int, under: str | None = None) -> dict[str, Any]:
    """Each level applies the next twice to the same value: 2^levels checks of one value."""
    defs = {f"a{i}": {"allOf": [{"$ref": f"#/$defs/a{i + 1}"}, {"$ref": f"#/$defs/a{i + 1}"}]} for i in range(levels)}
    defs[f"a{levels}"] = {"type": "string"}
    start = {"$ref": "#/$defs/a0"}
    return {"$defs": defs, **({"properties": {under: start}} if under else start)}


def test_a_schema_that_multiplies_checks_is_refused_in_linear_time() -> None:
    for schema in (exploding(40), exploding(40, under="x")):  # 2^40 checks of one value if it were run
        problem = expansion_problem(schema)
        assert problem is not None and "more than 10,000 subschemas" in problem
    assert expansion_problem(exploding(8)) is None  # 2^8 = 256: fine
    cycle = {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}},
             "$ref": "#/$defs/a"}
    assert "cycle" in (expansion_problem(cycle) or "")
    tree = {"$defs": {"node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}, "$ref": "#/$defs/node"}
    assert expansion_problem(tree) is None  # recursion through properties: bounded by the value itself
    assert schema_errors(tree, {"children": [{"children": []}]}) == []
