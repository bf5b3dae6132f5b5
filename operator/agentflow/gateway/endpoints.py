"""Which model endpoints a namespace may use, and where their data is processed: the platform's decision.

An Agent's ``spec.model.apiBase`` names an OpenAI-compatible endpoint. Whoever can create Agents in a
namespace is not trusted to pick one: a URL of their own would receive the prompts (and, without this
policy, the gateway's provider key), and a cluster-internal URL would make the gateway a proxy into the
cluster. The platform lists the endpoints (``agentflow operator`` / ``agentflow gateway`` flag
``--model-endpoints FILE``, the chart's ``models.endpoints``); the admission webhook refuses an Agent
whose apiBase is not listed for its namespace (naming ``spec.model.apiBase``), and the gateway refuses the
call (``EndpointNotAllowed``) before anything is sent, in case the Agent predates the policy.

The file (YAML or JSON)::

    endpoints:
      - url: https://llm.internal.example/v1     # a base URL; apiBase must be it or below it (path prefix)
        namespaces: ["team-*", "support"]         # fnmatch globs; default ["*"]
        environmentKey: false                     # may the gateway's own provider key be sent there
        region: eu-west-1                         # where it processes data (dataResidency.allowedRegions)
    providerRegions:                              # the region of each provider's own endpoint (no apiBase)
      openai: us
      anthropic: us

Environment keys: a call without apiBase goes to the provider's own endpoint with the Agent's Secret key or,
without one, the key from the gateway's environment (the platform's account). A call to a listed apiBase
gets the Agent's Secret key, or the environment key only where the entry says ``environmentKey: true``;
otherwise no key at all (a placeholder). Never to an unlisted URL.

Data residency: ``dataResidency.allowedRegions`` of an Agent keeps only the candidate models whose endpoint
has a known region in the list (an entry's ``region``, or ``providerRegions`` for provider endpoints); a
model of unknown region is skipped, and when none is left the call is refused naming each model and why.

The local runner is its own platform: unlisted endpoints are allowed there (``allow_unlisted``) but still
never receive an environment key.

Errors: :class:`EndpointPolicyError` (a ValueError) for a policy file that does not parse, naming the field.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from .router import provider_of

__all__ = ["EndpointDecision", "EndpointPolicy", "EndpointPolicyError", "EndpointRule", "normalize_url"]


class EndpointPolicyError(ValueError):
    """The endpoint policy (file or flag) is malformed; the message names the field."""


def normalize_url(url: str, where: str = "url") -> str:
    """``scheme://host[:port]/path`` without a trailing slash, lower-case scheme and host; ValueError naming
    ``where`` for anything that is not a plain http(s) URL (credentials, query and fragment are refused)."""
    text = url.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{where}: {url!r} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: {url!r} must be an http(s) URL with a host, e.g. https://api.example.com/v1")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{where}: {url!r} must not hold credentials (user:password@); use credentialsSecretRef")
    if parts.query or parts.fragment:
        raise ValueError(f"{where}: {url!r} must have no ?query or #fragment")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{netloc}{path}"


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointRule:
    url: str
    namespaces: tuple[str, ...] = ("*",)
    environment_key: bool = False
    region: str | None = None

    def covers(self, url: str) -> bool:
        """``url`` (normalized) is this endpoint or below its path."""
        return url == self.url or url.startswith(self.url + "/")

    def admits(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, glob) for glob in self.namespaces)


@dataclasses.dataclass(frozen=True, slots=True)
class EndpointDecision:
    """How a call to one model is sent: the normalized base URL (None: the provider's own endpoint),
    whether the gateway's environment key may go with it, and where the data is processed (None: unknown)."""

    api_base: str | None
    environment_key: bool
    region: str | None


@dataclasses.dataclass(frozen=True)
class EndpointPolicy:
    rules: tuple[EndpointRule, ...] = ()
    provider_regions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    allow_unlisted: bool = False
    """True only for the local runner: any apiBase may be called (never with an environment key)."""

    # ------------------------------------------------------------------ reading

    @classmethod
    def parse(cls, data: Any, source: str = "the endpoint policy") -> EndpointPolicy:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise EndpointPolicyError(f"{source}: expected a mapping with endpoints and providerRegions")
        unknown = sorted(set(data) - {"endpoints", "providerRegions"})
        if unknown:
            raise EndpointPolicyError(f"{source}: {unknown[0]}: unknown field (known: endpoints, providerRegions)")
        raw = data.get("endpoints") or []
        if not isinstance(raw, list):
            raise EndpointPolicyError(f"{source}: endpoints: expected a list")
        rules = [_rule(item, f"{source}: endpoints[{i}]") for i, item in enumerate(raw)]
        regions = data.get("providerRegions") or {}
        if not isinstance(regions, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in regions.items()):
            raise EndpointPolicyError(f"{source}: providerRegions: expected a mapping of provider to region")
        return cls(tuple(rules), dict(regions))

    @classmethod
    def from_text(cls, text: str, source: str) -> EndpointPolicy:
        try:
            data = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise EndpointPolicyError(f"{source}: not YAML or JSON: {exc}") from None
        return cls.parse(data, source)

    @classmethod
    def from_urls(cls, urls: Sequence[str], source: str = "--model-endpoint") -> EndpointPolicy:
        """One rule per URL, for every namespace, without the environment key."""
        rules = []
        for url in urls:
            try:
                rules.append(EndpointRule(normalize_url(url, source)))
            except ValueError as exc:
                raise EndpointPolicyError(str(exc)) from None
        return cls(tuple(rules))

    def merged(self, other: EndpointPolicy) -> EndpointPolicy:
        return EndpointPolicy(self.rules + other.rules, {**self.provider_regions, **other.provider_regions},
                              self.allow_unlisted or other.allow_unlisted)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoints": [{"url": r.url, "namespaces": list(r.namespaces), "environmentKey": r.environment_key,
                               **({"region": r.region} if r.region else {})} for r in self.rules],
                "providerRegions": dict(self.provider_regions)}

    # ------------------------------------------------------------------ deciding

    def problem(self, namespace: str, api_base: str | None) -> str | None:
        """Why an Agent in ``namespace`` may not use ``api_base`` (None: it may)."""
        if api_base is None:
            return None
        try:
            url = normalize_url(api_base, "spec.model.apiBase")
        except ValueError as exc:
            return str(exc)
        if self._rule(namespace, url) is not None or self.allow_unlisted:
            return None
        listed = [r.url for r in self.rules if r.admits(namespace)]
        hint = f"endpoints allowed in namespace {namespace!r}: {', '.join(listed)}" if listed else (
            f"the platform lists no endpoint for namespace {namespace!r}")
        return (f"spec.model.apiBase {api_base!r} is not an endpoint the platform allows ({hint}); leave apiBase "
                "unset to use the provider's own endpoint, or ask the platform team to list it")

    def decide(self, namespace: str, model: str, api_base: str | None) -> EndpointDecision:
        """How ``model`` is called for an Agent of ``namespace``; ValueError when the endpoint is not allowed."""
        if api_base is None:
            return EndpointDecision(None, True, self.provider_regions.get(provider_of(model)))
        problem = self.problem(namespace, api_base)
        if problem is not None:
            raise ValueError(problem)
        url = normalize_url(api_base)
        rule = self._rule(namespace, url)
        if rule is None:  # allow_unlisted
            return EndpointDecision(url, False, None)
        return EndpointDecision(url, rule.environment_key, rule.region)

    def _rule(self, namespace: str, url: str) -> EndpointRule | None:
        for rule in self.rules:
            if rule.covers(url) and rule.admits(namespace):
                return rule
        return None


def _rule(item: Any, where: str) -> EndpointRule:
    if not isinstance(item, Mapping):
        raise EndpointPolicyError(f"{where}: expected a mapping with url")
    unknown = sorted(set(item) - {"url", "namespaces", "environmentKey", "region"})
    if unknown:
        raise EndpointPolicyError(f"{where}.{unknown[0]}: unknown field (known: url, namespaces, environmentKey, "
                                  "region)")
    url = item.get("url")
    if not isinstance(url, str):
        raise EndpointPolicyError(f"{where}.url: required, a base URL such as https://api.example.com/v1")
    try:
        normalized = normalize_url(url, f"{where}.url")
    except ValueError as exc:
        raise EndpointPolicyError(str(exc)) from None
    host = urllib.parse.urlsplit(normalized).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_link_local:
        raise EndpointPolicyError(f"{where}.url: {url!r} is a link-local address (cloud metadata); refused")
    namespaces = item.get("namespaces", ["*"])
    if not isinstance(namespaces, list) or not namespaces or not all(isinstance(n, str) and n for n in namespaces):
        raise EndpointPolicyError(f"{where}.namespaces: expected a non-empty list of namespace names or globs")
    env_key = item.get("environmentKey", False)
    if not isinstance(env_key, bool):
        raise EndpointPolicyError(f"{where}.environmentKey: expected true or false")
    region = item.get("region")
    if region is not None and (not isinstance(region, str) or not region):
        raise EndpointPolicyError(f"{where}.region: expected a region name")
    return EndpointRule(normalized, tuple(namespaces), env_key, region)
