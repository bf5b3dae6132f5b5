"""The admission webhook's TLS, managed by the operator itself: a CA and a serving certificate it signed.

::

    generate(hosts, now=...)       -> ServingCert: a fresh CA, and a serving cert for every host it signed
    write(cert, folder)            -> (certfile, keyfile, cafile); the key readable by its owner only
    needs_renewal(cert_pem, now)   -> whether the cert ends within 30 days (or is unreadable, or not valid yet)
    webhook_server(listen_host, port, public_host, folder)
                                   -> a kopf.WebhookServer serving a fresh cert, renewing it before it ends

How it is wired. ``main.py`` sets ``settings.admission.server`` to
:func:`webhook_server` and ``settings.admission.managed = "agentflow.dev"``:
kopf then creates the ValidatingWebhookConfiguration ``agentflow.dev`` and
patches it with one webhook per ``@kopf.on.validate`` handler, whose
``clientConfig`` is ``url: https://<public_host>:<port>/<handler id>`` with
``caBundle`` set to our CA (from ``cafile``). The API server calls that URL
and verifies the serving certificate against the CA, so ``public_host`` must
be an address the API server reaches and is in the certificate's SANs:

- outside a cluster (development, the e2e cluster of ``tests/e2e/cluster``):
  an address of this machine the API server can connect to; ``127.0.0.1``
  when the API server runs on the same host;
- inside a cluster: the pod's IP from the downward API (``POD_IP`` from
  ``status.podIP``): the API server reaches pod IPs directly, without the
  cluster DNS it usually cannot use.

Every operator start makes a new CA and certificate (nothing to keep in a
Secret); a running server checks every hour and renews ``renew_within_days``
before the end. The renewal writes all three files in one step of the event
loop, so kopf's file watcher (every 60 s) never sees a new certificate with an
old key; it then restarts the endpoint and patches the new ``caBundle`` in.

With several replicas (kopf peering), each serves the same webhook (same
handlers, same answers) under its own CA, and patches the configuration at
start and again every ``reassert_interval`` (60 s): it points at whichever live
replica patched last. A replica that stops removes the webhooks (kopf's cleanup
of non-persistent handlers) and one that dies leaves its address behind; either
way a live replica puts its own back within the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import json
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .admission_body import refusal, too_deep

__all__ = ["ManagedWebhookServer", "ServingCert", "generate", "needs_renewal", "webhook_server", "write"]

log = logging.getLogger("agentflow.operator.certs")

CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"
BACKDATE = datetime.timedelta(minutes=5)  # tolerate an API server whose clock is a little behind ours
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
Clock = Callable[[], datetime.datetime]
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class ServingCert:
    """A serving certificate, its private key and the CA that signed it, all PEM."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _general_name(host: str) -> x509.GeneralName:
    """A SAN for one host: an IP address (v4 or v6, brackets allowed) or a DNS name."""
    text = host.strip()
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        pass
    else:
        if address.is_unspecified:
            raise ValueError(f"{host!r} is a listening address, not one a client can connect to")
        return x509.IPAddress(address)
    try:
        name = text.rstrip(".").lower().encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{host!r} is not a valid DNS name: {exc}") from None
    labels = name.split(".")
    if labels[0] == "*":  # a wildcard is allowed as the leftmost label only
        labels = labels[1:]
    if not labels or len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{host!r} is neither an IP address nor a valid DNS name")
    return x509.DNSName(name)


def _sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        name = _general_name(host)
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("a serving certificate needs at least one host")
    return names


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate(hosts: Sequence[str], *, now: datetime.datetime, days: int = 365) -> ServingCert:
    """A new CA and a serving certificate it signed, valid from ``now`` for ``days`` days.

    Every host becomes a SAN: IP addresses as IP SANs (what TLS clients match
    an address against), everything else as DNS SANs. Keys are ECDSA P-256.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if days < 1:
        raise ValueError("days must be at least 1")
    sans = _sans(hosts)
    start, end = now - BACKDATE, now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agentflow.dev"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "agentflow webhook CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    first = sans[0].value
    common_name = str(first) if len(str(first)) <= 64 else "agentflow webhook"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agentflow.dev"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ServingCert(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_pem_key(key),
                       ca_pem=ca.public_bytes(serialization.Encoding.PEM))


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically (temporary file in the same folder, then rename) with this mode."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write(cert: ServingCert, folder: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """Write the certificate, key and CA into ``folder`` (made 0700 if missing): (certfile, keyfile, cafile).

    The key is 0600, the certificates 0644; each file is replaced atomically.
    """
    where = Path(folder)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    certfile, keyfile, cafile = where / CERT_FILE, where / KEY_FILE, where / CA_FILE
    _replace(keyfile, cert.key_pem, 0o600)
    _replace(certfile, cert.cert_pem, 0o644)
    _replace(cafile, cert.ca_pem, 0o644)
    return certfile, keyfile, cafile


def needs_renewal(cert_pem: bytes, now: datetime.datetime, within_days: int = 30) -> bool:
    """Whether the certificate ends within ``within_days`` of ``now``, is not valid yet, or cannot be read."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return True
    if now < cert.not_valid_before_utc:
        return True
    return now + datetime.timedelta(days=within_days) >= cert.not_valid_after_utc


class ManagedWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server over our certificate files, renewing them while it serves."""

    def __init__(self, *, addr: str, port: int, host: str, hosts: Sequence[str], folder: Path, days: int,
                 renew_within_days: int, check_interval: float, reassert_interval: float, clock: Clock) -> None:
        super().__init__(addr=addr, port=port, host=host, certfile=folder / CERT_FILE, pkeyfile=folder / KEY_FILE,
                         cafile=folder / CA_FILE)
        self.hosts = tuple(hosts)
        self.folder = folder
        self.days = days
        self.renew_within_days = renew_within_days
        self.check_interval = check_interval
        self.reassert_interval = reassert_interval
        self.clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    def renew_if_needed(self) -> bool:
        """Replace the certificate files when they are due; whether they were replaced.

        Synchronous on purpose: called from the event loop, the three files
        change between two of kopf's file checks, never across one.
        """
        certfile = self.folder / CERT_FILE
        try:
            current = certfile.read_bytes()
        except FileNotFoundError:
            current = b""
        now = self.clock()
        if not needs_renewal(current, now, self.renew_within_days):
            return False
        write(generate(self.hosts, now=now, days=self.days), self.folder)
        log.info("renewed the webhook certificate for %s", ", ".join(self.hosts))
        return True

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                self.renew_if_needed()
            except OSError as exc:  # a full or read-only disk: keep serving the current one, try again later
                log.error("could not renew the webhook certificate in %s: %s", self.folder, exc)

    @staticmethod
    async def _next(configs: AsyncIterator[kopf.WebhookClientConfig]) -> kopf.WebhookClientConfig:
        return await anext(configs)

    def _spawn(self, coro: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        """kopf's server, its client config yielded again every ``reassert_interval`` seconds.

        kopf patches the webhook configuration on every yield: a replica that
        stopped (and removed the webhooks) or died (and left its address in
        them) is replaced by a live one within the interval.
        """
        renewer = self._spawn(self._renew_forever(), "agentflow webhook certificate renewal")
        configs = aiter(super().__call__(fn))
        pending: asyncio.Task[kopf.WebhookClientConfig] | None = None
        try:
            config = await anext(configs)
            while True:
                yield config
                if pending is None:  # kopf's server: on to watching the files, restarting when they change
                    pending = self._spawn(self._next(configs), "agentflow webhook server")
                done, _ = await asyncio.wait({pending}, timeout=self.reassert_interval)
                if done:
                    try:
                        config = pending.result()
                    except StopAsyncIteration:
                        return
                    pending = None
        finally:
            await self._stop([task for task in (pending, renewer) if task is not None])

    @staticmethod
    async def _stop(tasks: Collection[asyncio.Task[Any]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _serve(fn: kopf.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:
        """kopf's, after refusing a request nested too deep for its JSON decoder (admission_body)."""
        try:
            text = await request.text()  # aiohttp keeps the body: kopf reads it again
        except (UnicodeDecodeError, LookupError):  # bytes that are not UTF-8, or a charset Python does not know
            raise aiohttp.web.HTTPBadRequest(reason="the admission request is not UTF-8 JSON") from None
        if too_deep(text):
            review = refusal(text)
            if review is None:
                raise aiohttp.web.HTTPBadRequest(reason="the admission request is nested too deep to decode")
            return aiohttp.web.json_response(review)
        try:
            envelope = json.loads(text)
        except ValueError:
            raise aiohttp.web.HTTPBadRequest(reason="the admission request is not JSON") from None
        request_part = envelope.get("request") if isinstance(envelope, dict) else None
        if not isinstance(request_part, dict) or not isinstance(request_part.get("uid"), str):
            raise aiohttp.web.HTTPBadRequest(reason="not an AdmissionReview: it needs request.uid (a string)")
        return await kopf.WebhookServer._serve(fn, request)

    async def __aexit__(self, *exc: object) -> None:
        # kopf's exit closes the generators of the server; the one our task is running must be stopped first.
        await self._stop(list(self._tasks))
        await super().__aexit__(*exc)


def webhook_server(
    listen_host: str,
    port: int,
    public_host: str,
    folder: str | os.PathLike[str],
    *,
    extra_hosts: Sequence[str] = (),
    days: int = 365,
    renew_within_days: int = 30,
    check_interval: float = 3600.0,
    reassert_interval: float = 60.0,
    clock: Clock = _utcnow,
) -> ManagedWebhookServer:
    """The webhook server for ``settings.admission.server``: a fresh certificate for ``public_host``.

    Listens on ``listen_host:port`` (``0.0.0.0`` for every interface); the API
    server is told ``https://public_host:port``. ``extra_hosts`` become more
    SANs (a Service's DNS name, say). The files go to ``folder``: in a pod an
    ``emptyDir``, as the root filesystem is read-only.
    """
    hosts = [public_host, *extra_hosts]
    target = Path(folder)
    write(generate(hosts, now=clock(), days=days), target)
    return ManagedWebhookServer(
        addr=listen_host, port=port, host=public_host.removeprefix("[").removesuffix("]"), hosts=hosts,
        folder=target, days=days, renew_within_days=renew_within_days,
        check_interval=check_interval, reassert_interval=reassert_interval, clock=clock,
    )
