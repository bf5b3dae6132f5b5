"""The webhook's certificates: a CA, a serving certificate it signed, the files, renewal, the server."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import shutil
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from agentflow.controller import certs

NOW = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)
HOSTS = ["10.88.0.7", "agentflow-webhook.agentflow-system.svc", "fd00::7", "localhost"]


@pytest.fixture(scope="module")
def serving() -> certs.ServingCert:
    return certs.generate(HOSTS, now=NOW)


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def verifier(ca_pem: bytes, subject: x509.DNSName | x509.IPAddress, at: datetime.datetime = NOW) -> Any:
    return PolicyBuilder().store(Store([load(ca_pem)])).time(at).build_server_verifier(subject)


@pytest.mark.parametrize("host", HOSTS)
def test_the_chain_verifies_for_every_host(serving: certs.ServingCert, host: str) -> None:
    try:
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    chain = verifier(serving.ca_pem, subject).verify(load(serving.cert_pem), [])
    assert [c.subject for c in chain] == [load(serving.cert_pem).subject, load(serving.ca_pem).subject]


def test_the_chain_does_not_verify_for_another_host_or_ca_or_time(serving: certs.ServingCert) -> None:
    leaf = load(serving.cert_pem)
    with pytest.raises(VerificationError):
        verifier(serving.ca_pem, x509.DNSName("evil.example")).verify(leaf, [])
    with pytest.raises(VerificationError):
        verifier(serving.ca_pem, x509.IPAddress(ipaddress.ip_address("10.88.0.8"))).verify(leaf, [])
    with pytest.raises(VerificationError):
        verifier(certs.generate(HOSTS, now=NOW).ca_pem, x509.DNSName("localhost")).verify(leaf, [])
    with pytest.raises(VerificationError):
        verifier(serving.ca_pem, x509.DNSName("localhost"), NOW + datetime.timedelta(days=366)).verify(leaf, [])


def test_openssl_verifies_the_chain(serving: certs.ServingCert, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary")
    certfile, _, cafile = certs.write(serving, tmp_path)
    at = str(int(NOW.timestamp()))
    for host in (["-verify_ip", "10.88.0.7"], ["-verify_ip", "fd00::7"], ["-verify_hostname", "localhost"]):
        result = subprocess.run([openssl, "verify", "-attime", at, "-purpose", "sslserver", *host,
                                 "-CAfile", str(cafile), str(certfile)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    wrong = subprocess.run([openssl, "verify", "-attime", at, "-verify_ip", "10.0.0.1", "-CAfile", str(cafile),
                            str(certfile)], capture_output=True, text=True, check=False)
    assert wrong.returncode != 0


def test_ip_addresses_are_ip_sans_and_names_dns_sans(serving: certs.ServingCert) -> None:
    san = load(serving.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.88.0.7"),
                                                       ipaddress.ip_address("fd00::7")]
    assert san.get_values_for_type(x509.DNSName) == ["agentflow-webhook.agentflow-system.svc", "localhost"]


def test_the_ca_is_a_ca_and_the_serving_cert_is_not(serving: certs.ServingCert) -> None:
    ca, leaf = load(serving.ca_pem), load(serving.cert_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.issuer == ca.subject
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.not_valid_after_utc == NOW + datetime.timedelta(days=365)
    assert leaf.not_valid_before_utc < NOW


def test_hosts_are_normalised_and_deduplicated() -> None:
    cert = certs.generate(["[::1]", "0:0::1", "Example.COM.", "example.com", "*.svc.cluster.local"], now=NOW)
    san = load(cert.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    assert san.get_values_for_type(x509.DNSName) == ["example.com", "*.svc.cluster.local"]


@pytest.mark.parametrize("hosts", [[], ["0.0.0.0"], ["::"], ["bad host"], ["-x.example"], ["a..b"], ["x" * 64]])
def test_bad_hosts_are_refused(hosts: list[str]) -> None:
    with pytest.raises(ValueError):
        certs.generate(hosts, now=NOW)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        certs.generate(["localhost"], now=datetime.datetime(2026, 1, 1))


def test_write_keeps_the_key_private(serving: certs.ServingCert, tmp_path: Path) -> None:
    folder = tmp_path / "webhook"
    certfile, keyfile, cafile = certs.write(serving, folder)
    assert (certfile.read_bytes(), keyfile.read_bytes(), cafile.read_bytes()) == (
        serving.cert_pem, serving.key_pem, serving.ca_pem)
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(certfile.stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]  # no temporary files left
    certs.write(certs.generate(["localhost"], now=NOW), folder)  # replaced in place, still private
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600 and keyfile.read_bytes() != serving.key_pem
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)  # a matching pair


def test_needs_renewal(serving: certs.ServingCert) -> None:
    assert not certs.needs_renewal(serving.cert_pem, NOW)
    assert not certs.needs_renewal(serving.cert_pem, NOW + datetime.timedelta(days=334))
    assert certs.needs_renewal(serving.cert_pem, NOW + datetime.timedelta(days=335))
    assert certs.needs_renewal(serving.cert_pem, NOW + datetime.timedelta(days=400))
    assert not certs.needs_renewal(serving.cert_pem, NOW + datetime.timedelta(days=300), within_days=60)
    assert certs.needs_renewal(serving.cert_pem, NOW + datetime.timedelta(days=306), within_days=60)
    assert certs.needs_renewal(serving.cert_pem, NOW - datetime.timedelta(days=1))  # not valid yet
    assert certs.needs_renewal(b"not a certificate", NOW)


async def test_the_server_serves_https_with_our_ca_for_kopf(tmp_path: Path) -> None:
    """What the API server sees: the URL and caBundle kopf patches in, and a TLS handshake that verifies."""
    server = certs.webhook_server("127.0.0.1", 0, "127.0.0.1", tmp_path / "tls", clock=lambda: NOW,
                                  reassert_interval=0.05)
    assert isinstance(server, kopf.WebhookServer)
    ca_pem = (tmp_path / "tls" / "ca.crt").read_bytes()
    received: list[dict[str, Any]] = []

    async def fn(request: Any, *, webhook: str | None = None, headers: Any = None, sslpeer: Any = None) -> Any:
        received.append({"request": request, "webhook": webhook})
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": request["request"]["uid"], "allowed": True}}

    async with server:  # closes the endpoint on exit, as kopf does
        configs = aiter(server(fn))
        config = await asyncio.wait_for(anext(configs), timeout=10)
        assert base64.b64decode(config.get("caBundle") or "") == ca_pem  # our CA, not the serving certificate
        url = config.get("url") or ""
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cadata=ca_pem.decode())
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u1"}}
        async with aiohttp.ClientSession() as session, session.post(
            url + "/validate-workflows", data=json.dumps(review), ssl=context
        ) as response:
            assert response.status == 200
            assert (await response.json())["response"] == {"uid": "u1", "allowed": True}
        assert received == [{"request": review, "webhook": "validate-workflows"}]
        # The same config again after reassert_interval: kopf re-patches it, in case another replica took it away.
        assert await asyncio.wait_for(anext(configs), timeout=10) == config


def test_the_server_renews_its_files_when_due(tmp_path: Path) -> None:
    now = [NOW]
    server = certs.webhook_server("0.0.0.0", 9443, "10.88.0.7", tmp_path, extra_hosts=["localhost"],
                                  clock=lambda: now[0])
    assert (server.addr, server.port, server.host) == ("0.0.0.0", 9443, "10.88.0.7")
    assert (server.certfile, server.pkeyfile, server.cafile) == (
        tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt")
    first = (tmp_path / "tls.crt").read_bytes()
    assert not server.renew_if_needed()
    now[0] = NOW + datetime.timedelta(days=340)
    assert server.renew_if_needed()
    renewed = (tmp_path / "tls.crt").read_bytes()
    assert renewed != first and not certs.needs_renewal(renewed, now[0])
    verifier((tmp_path / "ca.crt").read_bytes(), x509.DNSName("localhost"), now[0]).verify(load(renewed), [])
    assert not server.renew_if_needed()


async def test_a_renewed_certificate_reaches_kopf_and_cancelling_stops_everything(tmp_path: Path) -> None:
    """Driven as kopf drives it: `async with server: async for config in server(fn)`, then cancelled."""
    now = [NOW]
    server = certs.webhook_server("127.0.0.1", 0, "127.0.0.1", tmp_path, clock=lambda: now[0], check_interval=0.02)
    server.file_check_interval = 0.02  # kopf's re-reading of the files (60 s by default)
    configs: list[kopf.WebhookClientConfig] = []

    async def fn(request: Any, **_: Any) -> Any:
        raise AssertionError("no requests in this test")

    async def kopf_like() -> None:
        async with server:
            async for config in server(fn):
                configs.append(config)

    async def until(count: int) -> None:
        while len(configs) < count:
            await asyncio.sleep(0.01)

    task = asyncio.create_task(kopf_like())
    await asyncio.wait_for(until(1), timeout=10)
    first_ca = (tmp_path / "ca.crt").read_bytes()
    assert base64.b64decode(configs[0].get("caBundle") or "") == first_ca
    now[0] = NOW + datetime.timedelta(days=340)
    await asyncio.wait_for(until(2), timeout=10)
    renewed_ca = (tmp_path / "ca.crt").read_bytes()
    assert renewed_ca != first_ca and base64.b64decode(configs[1].get("caBundle") or "") == renewed_ca
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not server._tasks
    url = (configs[1].get("url") or "").replace("https://", "http://")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(url):
            pass
