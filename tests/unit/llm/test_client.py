"""LiteLLMClient against a real OpenAI-compatible server on loopback; FallbackClient; error translation."""

from __future__ import annotations

import dataclasses
from types import ModuleType

import pytest

from agentflow.llm import (
    KEYLESS_PLACEHOLDER,
    FallbackClient,
    LiteLLMClient,
    ModelError,
    ModelRequest,
    ModelResponse,
    OfflineModel,
    make_model_client,
    request_hash,
    translate_error,
)

from .fake_openai import FakeOpenAI, Reply


def _request(server: FakeOpenAI, model: str = "openai/fake-model", **kw: object) -> ModelRequest:
    fields: dict[str, object] = {
        "model": model,
        "messages": ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}),
        "api_base": server.base_url,
        "api_key": "sk-test",
        "metadata": {"idempotency_key": "run-1/classify/1"},
    }
    fields.update(kw)
    return ModelRequest(**fields)  # type: ignore[arg-type]


class TestLiteLLMClient:
    async def test_sends_messages_params_and_idempotency_key(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        client = LiteLLMClient(litellm_module=litellm_module)
        response = await client.complete(_request(fake_openai, temperature=0.3, max_tokens=64))

        assert response.text == "hello from the fake server"
        assert response.model == "openai/fake-model"
        [got] = fake_openai.received
        assert got.path == "/v1/chat/completions"
        assert got.body["model"] == "fake-model"
        assert got.body["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi there"},
        ]
        assert got.body["temperature"] == 0.3
        assert got.body["max_tokens"] == 64
        assert got.headers["authorization"] == "Bearer sk-test"
        assert got.headers["idempotency-key"] == "run-1/classify/1"

    async def test_tokens_from_usage_and_unknown_model_costs_nothing(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        fake_openai.script.append(Reply(prompt_tokens=120, completion_tokens=30))
        ticks = iter([10.0, 10.25])
        client = LiteLLMClient(litellm_module=litellm_module, clock=lambda: next(ticks))
        response = await client.complete(_request(fake_openai))
        assert (response.input_tokens, response.output_tokens) == (120, 30)
        assert response.cost_usd == 0.0
        assert response.latency_ms == pytest.approx(250.0)
        assert response.cached is False

    async def test_known_model_is_priced_from_bundled_table(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        fake_openai.script.append(Reply(prompt_tokens=1000, completion_tokens=500))
        client = LiteLLMClient(litellm_module=litellm_module)
        response = await client.complete(_request(fake_openai, model="openai/gpt-4o-mini"))
        prices = litellm_module.model_cost["gpt-4o-mini"]
        expected = 1000 * prices["input_cost_per_token"] + 500 * prices["output_cost_per_token"]
        assert response.cost_usd == pytest.approx(expected)
        assert response.cost_usd > 0

    async def test_rate_limit_is_retryable_and_next_call_succeeds(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        fake_openai.script.extend([Reply(status=429), Reply(text="second time lucky")])
        client = LiteLLMClient(litellm_module=litellm_module)
        with pytest.raises(ModelError) as info:
            await client.complete(_request(fake_openai))
        assert info.value.type == "RateLimited"
        assert info.value.retryable is True
        assert len(fake_openai.received) == 1, "litellm's own retries must be off: the engine retries"
        assert (await client.complete(_request(fake_openai))).text == "second time lucky"

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
        self,
        fake_openai: FakeOpenAI,
        litellm_module: ModuleType,
        status: int,
        error_type: str,
        retryable: bool,
    ) -> None:
        fake_openai.script.append(Reply(status=status))
        with pytest.raises(ModelError) as info:
            await LiteLLMClient(litellm_module=litellm_module).complete(_request(fake_openai))
        assert (info.value.type, info.value.retryable) == (error_type, retryable)
        assert "openai/fake-model" in str(info.value)

    async def test_unreachable_endpoint_is_a_retryable_connection_error(self, litellm_module: ModuleType) -> None:
        server = FakeOpenAI()  # bound but never serving: connections are refused or hang until timeout
        base = server.base_url
        server.stop_unstarted()
        request = ModelRequest(
            model="openai/fake-model",
            messages=({"role": "user", "content": "x"},),
            api_base=base,
            api_key="sk-test",
            timeout_seconds=2,
        )
        with pytest.raises(ModelError) as info:
            await LiteLLMClient(litellm_module=litellm_module).complete(request)
        assert info.value.retryable is True
        assert info.value.type in ("ModelConnectionError", "ModelTimeout")


class TestFallbackClient:
    async def test_falls_back_in_order_on_retryable_errors(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        fake_openai.script.extend([Reply(status=503), Reply(status=429), Reply(text="from the second fallback")])
        client = FallbackClient(
            LiteLLMClient(litellm_module=litellm_module), ["openai/fallback-a", "openai/fallback-b"]
        )
        response = await client.complete(_request(fake_openai, model="openai/primary"))
        assert [r.body["model"] for r in fake_openai.received] == ["primary", "fallback-a", "fallback-b"]
        assert response.model == "openai/fallback-b"
        assert response.failed_models == ("openai/primary", "openai/fallback-a")
        assert response.text == "from the second fallback"

    async def test_non_retryable_error_stops_at_once(self, fake_openai: FakeOpenAI, litellm_module: ModuleType) -> None:
        fake_openai.script.append(Reply(status=401))
        client = FallbackClient(LiteLLMClient(litellm_module=litellm_module), ["openai/fallback-a"])
        with pytest.raises(ModelError) as info:
            await client.complete(_request(fake_openai, model="openai/primary"))
        assert info.value.type == "AuthenticationFailed"
        assert len(fake_openai.received) == 1

    async def test_all_failing_names_every_model(self) -> None:
        class Down:
            def __init__(self) -> None:
                self.seen: list[str] = []

            async def complete(self, request: ModelRequest) -> ModelResponse:
                self.seen.append(request.model)
                raise ModelError("ProviderUnavailable", "down", retryable=True, model=request.model)

        down = Down()
        request = ModelRequest(model="m1", messages=({"role": "user", "content": "x"},))
        with pytest.raises(ModelError) as info:
            await FallbackClient(down, ["m2", "m1", "m3"]).complete(request)
        assert down.seen == ["m1", "m2", "m3"], "duplicates are tried once, in order"
        assert info.value.retryable is True
        assert "m1: ProviderUnavailable" in str(info.value) and "m3: ProviderUnavailable" in str(info.value)


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
    def test_hash_ignores_credentials_endpoint_and_metadata(self) -> None:
        a = ModelRequest(model="m", messages=({"role": "user", "content": "x"},), temperature=0.1)
        b = dataclasses.replace(a, api_key="secret", api_base="http://x", metadata={"idempotency_key": "k"})
        assert request_hash(a) == request_hash(b)
        assert len(request_hash(a)) == 64

    def test_hash_changes_with_what_shapes_the_answer(self) -> None:
        a = ModelRequest(model="m", messages=({"role": "user", "content": "x"},))
        assert request_hash(a) != request_hash(dataclasses.replace(a, model="n"))
        assert request_hash(a) != request_hash(dataclasses.replace(a, temperature=0.5))
        assert request_hash(a) != request_hash(dataclasses.replace(a, messages=({"role": "user", "content": "y"},)))

    def test_api_key_is_not_in_repr(self) -> None:
        request = ModelRequest(model="m", messages=({"role": "user", "content": "x"},), api_key="sk-secret")
        assert "sk-secret" not in repr(request)

    def test_invalid_requests_name_the_field(self) -> None:
        with pytest.raises(ValueError, match="model"):
            ModelRequest(model="", messages=({"role": "user", "content": "x"},))
        with pytest.raises(ValueError, match=r"messages\[0\]"):
            ModelRequest(model="m", messages=({"role": "user"},))


class TestMakeModelClient:
    def test_no_provider_means_offline(self) -> None:
        assert isinstance(make_model_client({}), OfflineModel)
        assert isinstance(make_model_client({"OPENAI_API_KEY": "  "}), OfflineModel)

    def test_provider_key_or_base_means_litellm(self) -> None:
        assert isinstance(make_model_client({"OPENAI_API_KEY": "sk-x"}), LiteLLMClient)
        assert isinstance(make_model_client({"OLLAMA_API_BASE": "http://localhost:11434"}), LiteLLMClient)

    def test_mode_overrides(self) -> None:
        assert isinstance(make_model_client({"AGENTFLOW_MODEL_MODE": "offline", "OPENAI_API_KEY": "k"}), OfflineModel)
        assert isinstance(make_model_client({"AGENTFLOW_MODEL_MODE": "live"}), LiteLLMClient)

    async def test_keyless_local_server_gets_a_placeholder_key(
        self, fake_openai: FakeOpenAI, litellm_module: ModuleType
    ) -> None:
        client = make_model_client({"AGENTFLOW_API_BASE": fake_openai.base_url})
        assert isinstance(client, LiteLLMClient)
        client._litellm = litellm_module  # reuse the session's import
        request = ModelRequest(model="openai/local-model", messages=({"role": "user", "content": "hi"},))
        assert (await client.complete(request)).text == "hello from the fake server"
        assert fake_openai.received[0].headers["authorization"] == f"Bearer {KEYLESS_PLACEHOLDER}"

    def test_real_keys_are_never_replaced(self) -> None:
        client = make_model_client({"AGENTFLOW_API_BASE": "http://x/v1", "OPENAI_API_KEY": "sk-real"})
        assert isinstance(client, LiteLLMClient) and client._api_key is None

    def test_bad_mode_names_the_variable(self) -> None:
        with pytest.raises(ValueError, match="AGENTFLOW_MODEL_MODE"):
            make_model_client({"AGENTFLOW_MODEL_MODE": "turbo"})
