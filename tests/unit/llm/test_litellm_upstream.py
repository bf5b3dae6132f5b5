"""LiteLLMUpstream against a real OpenAI-compatible server on loopback; keys; error translation; requests."""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import pytest

from agentflow.llm import ChatRequest, Endpoint, ModelError, provider_from_env, request_hash
from agentflow.llm.litellm_upstream import KEYLESS_PLACEHOLDER, LiteLLMUpstream, translate_error

from .fake_openai import FakeOpenAI, Reply

MESSAGES = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"})


def _request(model: str = "openai/fake-model", **kw: object) -> ChatRequest:
    fields: dict[str, object] = {"model": model, "messages": MESSAGES, "idempotency_key": "run-1/classify/1"}
    fields.update(kw)
    return ChatRequest(**fields)  # type: ignore[arg-type]


def _at(server: FakeOpenAI, key: str | None = "sk-test") -> Endpoint:
    return Endpoint(server.base_url, key)


class TestLiteLLMUpstream:
    async def test_sends_messages_params_and_idempotency_key(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        upstream = LiteLLMUpstream(litellm_module=litellm_module)
        fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}
        response = await upstream.complete(_request(temperature=0.3, max_tokens=64, top_p=0.5, seed=7,
                                                    stop=("END",), response_format=fmt), _at(fake_openai))
        assert response.text == "hello from the fake server"
        assert response.model == "openai/fake-model"
        [got] = fake_openai.received
        assert got.path == "/v1/chat/completions"
        assert got.body["model"] == "fake-model"
        assert got.body["messages"] == [dict(m) for m in MESSAGES]
        assert (got.body["temperature"], got.body["max_tokens"], got.body["top_p"], got.body["seed"]) == (
            0.3, 64, 0.5, 7)
        assert got.body["stop"] == ["END"]
        assert got.body["response_format"]["type"] == "json_schema", "response_format must reach the provider"
        assert got.headers["authorization"] == "Bearer sk-test"
        assert got.headers["idempotency-key"] == "run-1/classify/1"

    async def test_tools_go_up_and_tool_calls_come_back(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 3}'}}
        fake_openai.script.append(Reply(text=None, tool_calls=[call]))  # type: ignore[arg-type]
        tools = ({"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},)
        response = await LiteLLMUpstream(litellm_module=litellm_module).complete(
            _request(tools=tools, tool_choice="auto", parallel_tool_calls=True), _at(fake_openai))
        [got] = fake_openai.received
        assert got.body["tools"] == [dict(t) for t in tools] and got.body["tool_choice"] == "auto"
        assert got.body["parallel_tool_calls"] is True
        assert response.text == "" and response.finish_reason == "tool_calls"
        assert [dict(c) for c in response.tool_calls] == [call]
        assert response.message() == {"role": "assistant", "content": None, "tool_calls": [call]}

    async def test_tokens_from_usage_and_unknown_model_costs_nothing(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        fake_openai.script.append(Reply(prompt_tokens=120, completion_tokens=30))
        ticks = iter([10.0, 10.25])
        upstream = LiteLLMUpstream(litellm_module=litellm_module, clock=lambda: next(ticks))
        response = await upstream.complete(_request(), _at(fake_openai))
        assert (response.input_tokens, response.output_tokens) == (120, 30)
        assert response.cost_usd == 0.0
        assert response.latency_ms == pytest.approx(250.0)
        assert response.cached is False

    async def test_known_model_is_priced_from_bundled_table(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        fake_openai.script.append(Reply(prompt_tokens=1000, completion_tokens=500))
        upstream = LiteLLMUpstream(litellm_module=litellm_module)
        response = await upstream.complete(_request(model="openai/gpt-4o-mini"), _at(fake_openai))
        prices = litellm_module.model_cost["gpt-4o-mini"]
        expected = 1000 * prices["input_cost_per_token"] + 500 * prices["output_cost_per_token"]
        assert response.cost_usd == pytest.approx(expected)
        assert response.cost_usd > 0

    async def test_rate_limit_is_retryable_and_litellm_does_not_retry(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        fake_openai.script.extend([Reply(status=429), Reply(text="second time lucky")])
        upstream = LiteLLMUpstream(litellm_module=litellm_module)
        with pytest.raises(ModelError) as info:
            await upstream.complete(_request(), _at(fake_openai))
        assert info.value.type == "RateLimited"
        assert info.value.retryable is True
        assert len(fake_openai.received) == 1, "litellm's own retries must be off: the engine retries"
        assert (await upstream.complete(_request(), _at(fake_openai))).text == "second time lucky"

    @pytest.mark.parametrize(
        ("status", "error_type", "retryable"),
        [
            (401, "AuthenticationFailed", False),
            (400, "BadModelRequest", False),
            (404, "ModelNotFound", False),
            (500, "ProviderError", True),
            (503, "ProviderUnavailable", True),
        ],
    )
    async def test_http_errors_are_translated(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType, status: int, error_type: str, retryable: bool,
    ) -> None:
        fake_openai.script.append(Reply(status=status))
        with pytest.raises(ModelError) as info:
            await LiteLLMUpstream(litellm_module=litellm_module).complete(_request(), _at(fake_openai))
        assert (info.value.type, info.value.retryable) == (error_type, retryable)
        assert "openai/fake-model" in str(info.value)

    async def test_unreachable_endpoint_is_a_retryable_connection_error(self, litellm_module: ModuleType) -> None:
        server = FakeOpenAI()  # bound but never serving: connections are refused or hang until timeout
        base = server.base_url
        server.stop_unstarted()
        with pytest.raises(ModelError) as info:
            await LiteLLMUpstream(litellm_module=litellm_module).complete(
                _request(timeout_seconds=2), Endpoint(base, "sk-test"))
        assert info.value.retryable is True
        assert info.value.type in ("ModelConnectionError", "ModelTimeout")


def _completion(message: dict[str, Any] | None, usage: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if message is not None:
        choice["message"] = message
    body: dict[str, Any] = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1700000000,
                            "model": "fake-model", "choices": [choice]}
    if usage is not None:
        body["usage"] = usage
    return body


class TestHostileAnswers:
    async def test_an_answer_without_usage_is_still_charged_by_counting(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        for usage in (None, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}):
            fake_openai.script.append(Reply(raw=_completion({"role": "assistant", "content": "x" * 400}, usage)))
            response = await LiteLLMUpstream(litellm_module=litellm_module).complete(_request(), _at(fake_openai))
            assert response.input_tokens > 0 and response.output_tokens == 100, usage

    @pytest.mark.parametrize("usage", [
        {"prompt_tokens": -1000000, "completion_tokens": -5, "total_tokens": -1000005},
        {"prompt_tokens": 10**15, "completion_tokens": 1, "total_tokens": 10**15 + 1},
        {"prompt_tokens": "lots", "completion_tokens": 1, "total_tokens": 2},
        {"prompt_tokens": 1.5, "completion_tokens": 1, "total_tokens": 2.5},
    ], ids=["negative", "absurd", "string", "fraction"])
    async def test_usage_that_is_not_a_count_is_a_bad_model_response(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType, usage: dict[str, Any]
    ) -> None:
        fake_openai.script.append(Reply(raw=_completion({"role": "assistant", "content": "ok"}, usage)))
        with pytest.raises(ModelError) as caught:
            await LiteLLMUpstream(litellm_module=litellm_module).complete(_request(), _at(fake_openai))
        assert caught.value.type == "BadModelResponse" and not caught.value.retryable, caught.value
        assert "Traceback" not in str(caught.value) and len(str(caught.value)) < 700

    @pytest.mark.parametrize("message", [
        None,  # no message at all
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},  # no function
    ], ids=["no-message", "call-without-function"])
    async def test_an_answer_that_is_not_a_completion_is_a_bad_model_response_without_a_traceback(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType, message: dict[str, Any] | None
    ) -> None:
        fake_openai.script.append(Reply(raw=_completion(message, {"prompt_tokens": 1, "completion_tokens": 1,
                                                                  "total_tokens": 2})))
        with pytest.raises(ModelError) as caught:
            await LiteLLMUpstream(litellm_module=litellm_module).complete(_request(), _at(fake_openai))
        assert caught.value.type == "BadModelResponse" and not caught.value.retryable, caught.value
        assert "Traceback" not in str(caught.value) and "File " not in str(caught.value)


class TestKeys:
    """Which key goes where: an environment key never reaches an endpoint the gateway did not allow it for."""

    def test_an_explicit_endpoint_without_a_key_gets_the_placeholder_not_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-platform")
        upstream = LiteLLMUpstream(api_key="sk-default")
        kwargs = upstream.kwargs(_request(), Endpoint("http://tenant.example/v1"))
        assert kwargs["api_key"] == KEYLESS_PLACEHOLDER and kwargs["api_base"] == "http://tenant.example/v1"

    def test_an_allowed_endpoint_gets_the_platform_key(self) -> None:
        upstream = LiteLLMUpstream(api_key="sk-default")
        kwargs = upstream.kwargs(_request(), Endpoint("http://llm.internal/v1", environment_key=True))
        assert kwargs["api_key"] == "sk-default"

    def test_the_agents_own_key_wins(self) -> None:
        kwargs = LiteLLMUpstream(api_key="sk-default").kwargs(_request(), Endpoint("http://x/v1", "sk-agent"))
        assert kwargs["api_key"] == "sk-agent"

    def test_a_provider_endpoint_may_use_the_environment(self) -> None:
        kwargs = LiteLLMUpstream().kwargs(_request(), Endpoint(None, None, environment_key=True))
        assert "api_key" not in kwargs and "api_base" not in kwargs  # litellm reads OPENAI_API_KEY itself

    async def test_keyless_local_server_gets_a_placeholder_key(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        provider = provider_from_env({"AGENTFLOW_API_BASE": fake_openai.base_url})
        upstream = provider.upstream
        assert isinstance(upstream, LiteLLMUpstream)
        upstream._litellm = litellm_module  # reuse the session's import
        assert (await upstream.complete(_request(model="openai/local-model"), Endpoint())).text == (
            "hello from the fake server")
        assert fake_openai.received[0].headers["authorization"] == f"Bearer {KEYLESS_PLACEHOLDER}"


class TestTranslateError:
    def _exc(self, name: str, status: int | None = None) -> Exception:
        exc: Exception = type(name, (Exception,), {})("boom")
        if status is not None:
            setattr(exc, "status_code", status)  # noqa: B010 - a dynamic class has no declared attribute
        return exc

    def test_subclass_rules_win_over_base_rules(self) -> None:
        base = type("BadRequestError", (Exception,), {})
        context = type("ContextWindowExceededError", (base,), {})
        error = translate_error(context("too long"), "m")
        assert (error.type, error.retryable) == ("ContextWindowExceeded", False)
        assert "larger context window" in str(error)

    def test_unknown_status_codes_follow_http_semantics(self) -> None:
        assert translate_error(self._exc("Weird", 502), "m").retryable is True
        assert translate_error(self._exc("Weird", 429), "m").retryable is True
        assert translate_error(self._exc("Weird", 422), "m").retryable is False

    def test_missing_credentials_reported_as_a_server_error_is_an_auth_error(self) -> None:
        exc = self._exc("InternalServerError", 500)
        exc.args = ("litellm.InternalServerError: OpenAIException - Missing credentials. Please pass an `api_key`",)
        error = translate_error(exc, "openai/x")
        assert (error.type, error.retryable) == ("AuthenticationFailed", False)
        assert "OPENAI_API_KEY" in str(error)

    def test_plain_python_errors(self) -> None:
        assert translate_error(TimeoutError(), "m").type == "ModelTimeout"
        assert translate_error(ConnectionRefusedError(), "m").retryable is True
        unknown = translate_error(RuntimeError("bug"), "m")
        assert (unknown.type, unknown.retryable) == ("ModelCallFailed", False)


class TestRequest:
    def test_hash_ignores_delivery_fields(self) -> None:
        a = ChatRequest(model="m", messages=({"role": "user", "content": "x"},), temperature=0.1)
        b = dataclasses.replace(a, idempotency_key="k", timeout_seconds=3, read_cache=False)
        assert request_hash(a) == request_hash(b)
        assert len(request_hash(a)) == 64

    def test_hash_changes_with_what_shapes_the_answer(self) -> None:
        a = ChatRequest(model="m", messages=({"role": "user", "content": "x"},))
        for change in ({"model": "n"}, {"temperature": 0.5}, {"messages": ({"role": "user", "content": "y"},)},
                       {"top_p": 0.9}, {"seed": 1}, {"stop": ("x",)}, {"response_format": {"type": "json_object"}},
                       {"tools": ({"type": "function", "function": {"name": "f"}},)}, {"tool_choice": "none"}):
            assert request_hash(a) != request_hash(dataclasses.replace(a, **change)), change  # type: ignore[arg-type]

    def test_invalid_requests_name_the_field(self) -> None:
        with pytest.raises(ValueError, match="model"):
            ChatRequest(model="", messages=({"role": "user", "content": "x"},))
        with pytest.raises(ValueError, match="messages"):
            ChatRequest(model="m", messages=())

    def test_output_schema_comes_from_response_format(self) -> None:
        schema = {"type": "object"}
        fmt = {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}}
        assert ChatRequest(model="m", messages=MESSAGES, response_format=fmt).output_schema == schema
        assert ChatRequest(model="m", messages=MESSAGES, response_format={"type": "json_object"}).wants_json


class TestProviderFromEnv:
    def test_no_provider_means_offline(self) -> None:
        assert not provider_from_env({}).live
        assert not provider_from_env({"OPENAI_API_KEY": "  "}).live

    def test_provider_key_or_base_means_litellm(self) -> None:
        assert provider_from_env({"OPENAI_API_KEY": "sk-x"}).live
        assert provider_from_env({"OLLAMA_API_BASE": "http://localhost:11434"}).live

    def test_mode_overrides(self) -> None:
        assert not provider_from_env({"AGENTFLOW_MODEL_MODE": "offline", "OPENAI_API_KEY": "k"}).live
        assert provider_from_env({"AGENTFLOW_MODEL_MODE": "live"}).live

    def test_bad_mode_names_the_variable(self) -> None:
        with pytest.raises(ValueError, match="AGENTFLOW_MODEL_MODE"):
            provider_from_env({"AGENTFLOW_MODEL_MODE": "turbo"})
