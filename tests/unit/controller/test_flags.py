"""`agentflow operator` flags of the platform's side: the signing key, the egress deny-list, pod selectors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agentflow.controller.main import build_parser, network_config, signing_key


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["--postgres-dsn", "postgresql://x", *argv])


def test_the_api_servers_service_address_is_always_denied() -> None:
    config = network_config(args("--egress-deny", "10.244.0.0/16"),
                            {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert config.deny.problem("10.96.0.1", 443) is not None
    assert config.deny.problem("10.244.1.5", 80) is not None
    assert config.deny.problem("169.254.169.254", 80) is not None  # the built-in list stays
    assert config.deny.problem("93.184.216.34", 443) is None


def test_pod_selectors_are_read_and_a_bad_one_names_its_flag() -> None:
    config = network_config(args("--gateway-pods", "agentflow-system:app.kubernetes.io/component=gateway"), {})
    assert config.gateway_pods == ("agentflow-system", {"app.kubernetes.io/component": "gateway"})
    with pytest.raises(SystemExit, match="--callback-pods 'nolabels'"):
        network_config(args("--callback-pods", "nolabels"), {})
    with pytest.raises(SystemExit, match=r"--egress-deny 'example\.com'"):
        network_config(args("--egress-deny", "example.com"), {})


def test_the_signing_key_is_read_and_must_be_long(tmp_path: Path) -> None:
    good = tmp_path / "key"
    good.write_bytes(b"k" * 40 + b"\n")
    assert signing_key(str(good)) == b"k" * 40
    short = tmp_path / "short"
    short.write_bytes(b"short")
    with pytest.raises(SystemExit, match="has 5 bytes; at least 32"):
        signing_key(str(short))
    with pytest.raises(SystemExit, match="cannot read it"):
        signing_key(str(tmp_path / "missing"))
    assert len(signing_key(None)) == 32 and signing_key(None) != signing_key(None)


def test_step_pods_export_to_the_step_collector_or_the_operators_unless_it_is_on_loopback(
        caplog: pytest.LogCaptureFixture) -> None:
    from agentflow.controller.main import step_otlp_endpoint
    from agentflow.telemetry import TraceSettings

    traced = TraceSettings(endpoint="http://otel.observability:4318/v1/traces")
    assert step_otlp_endpoint(args(), traced) == "http://otel.observability:4318/v1/traces"
    assert step_otlp_endpoint(args("--step-otlp-endpoint", "http://10.0.0.9:4318"), traced) == \
        "http://10.0.0.9:4318/v1/traces"
    assert step_otlp_endpoint(args("--step-otlp-endpoint", "none"), traced) is None
    assert step_otlp_endpoint(args("--step-otlp-endpoint", "http://10.0.0.9:4318"), TraceSettings()) is None
    assert step_otlp_endpoint(args(), TraceSettings(endpoint="http://127.0.0.1:4318/v1/traces")) is None
    assert "step pods cannot reach" in caplog.text
    with pytest.raises(SystemExit, match="--step-otlp-endpoint 'collector:4318'"):
        step_otlp_endpoint(args("--step-otlp-endpoint", "collector:4318"), traced)
    config = network_config(args("--step-otlp-pods", "observability:app=otel"), {},
                            collector="http://otel.observability:4318/v1/traces")
    assert config.collector == ("otel.observability", 4318)
    assert config.collector_pods == ("observability", {"app": "otel"})
    with pytest.raises(SystemExit, match="--step-otlp-pods 'otel'"):
        network_config(args("--step-otlp-pods", "otel"), {}, collector="http://10.0.0.9:4318/v1/traces")


def test_notification_flags_build_the_smtp_relay_and_the_allowlist() -> None:
    from agentflow.factory import notify_config

    config = notify_config(args("--console-url", "https://agentflow.example.com/", "--smtp-host", "smtp.example.com",
                                "--smtp-port", "465", "--smtp-tls", "--smtp-from", "agentflow@example.com",
                                "--smtp-username", "relay", "--notify-webhook-hosts", "Hooks.Slack.com, chat.x.io"),
                           {"AGENTFLOW_SMTP_PASSWORD": "pw"})
    assert config.settings.console_url == "https://agentflow.example.com/"
    assert config.settings.webhook_hosts == ("hooks.slack.com", "chat.x.io")
    assert config.smtp is not None and config.smtp.tls and not config.smtp.starttls
    assert (config.smtp.port, config.smtp.username, config.smtp.password) == (465, "relay", "pw")
    off = notify_config(args(), {})
    assert off.smtp is None and off.settings.webhook_hosts == ("hooks.slack.com",)
    assert notify_config(args("--notify-webhook-hosts", ""), {}).settings.webhook_hosts == ()


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--console-url", "agentflow.example.com"], {}, "--console-url"),
    (["--console-url", "https://x.example.com/?a=1"], {}, "--console-url"),
    (["--notify-webhook-hosts", "https://hooks.slack.com"], {}, "--notify-webhook-hosts"),
    (["--notify-webhook-hosts", "hooks.slack.com/path"], {}, "--notify-webhook-hosts"),
    (["--smtp-host", "smtp.x.io"], {}, "--smtp-from"),
    (["--smtp-host", "smtp.x.io", "--smtp-from", "Agent <a@x.io>"], {}, "--smtp-from"),
    (["--smtp-host", "smtp.x.io", "--smtp-from", "a@x.io", "--smtp-port", "0"], {}, "--smtp-port"),
    (["--smtp-host", "smtp.x.io", "--smtp-from", "a@x.io", "--smtp-tls", "--smtp-starttls"], {}, "exclude each other"),
    (["--smtp-host", "smtp.x.io", "--smtp-from", "a@x.io", "--smtp-username", "u"], {}, "AGENTFLOW_SMTP_PASSWORD"),
    (["--smtp-host", "smtp.x.io", "--smtp-from", "a@x.io"], {"AGENTFLOW_SMTP_PASSWORD": "p"}, "--smtp-username"),
])
def test_bad_notification_flags_are_refused_naming_the_flag(argv: list[str], env: dict[str, str],
                                                            message: str) -> None:
    from agentflow.factory import ConfigError, notify_config

    with pytest.raises(ConfigError, match=message):
        notify_config(args(*argv), env)


def test_the_workflow_depth_defaults_to_five_and_a_bad_value_names_the_flag(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert args().max_workflow_depth == 5
    assert args("--max-workflow-depth", "2").max_workflow_depth == 2
    for bad in ("51", "-1", "deep"):
        with pytest.raises(SystemExit):
            args("--max-workflow-depth", bad)
        assert "--max-workflow-depth" in capsys.readouterr().err
