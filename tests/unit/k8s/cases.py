"""Builders fed from case files: ``cases/*.yaml`` hold ``kind``, ``input`` and ``expected``.

kinds::

    pod             input: owner, namespace, request, token, config, and either the keyword arguments of
                    build_step_pod (runtimeClass, timeoutSeconds, resources, env, extraLabels) or a
                    ``profile`` source (step, agent, policies) that profile_for turns into them
    profile         input: step, agent, policies, tool (a name looked up in the policies, or a full spec)
    networkPolicy   input: owner, namespace, podName, profile (source or {egress: [[host, port]]}), callback...;
                    or baseline: true, namespace, callback, dns, gateway, collector and their pods
                    ({namespace, labels}): the namespace's baseline
    status          input: run (see runs.py) and args of workflow_status (generation, now, maxNodes,
                    traceId, traceUrl, outputRef as a format string with {node}, previous)
    events          input: run; expected: [[type, reason, message], ...]
    statusPatch     input: builder (stalled, invalidSpec or missingReferences) and its arguments: current (the
                    status now, for stalled), reason, message (or missing), now, generation, previous
    childWorkflow   input: parent (a Workflow body), request, ref (a workflowTemplateRef), depth; expected: the child
                    Workflow of k8s.subworkflow.child_body
    driftPatch      input: current (an Agent's status), alarms [{namespace, agent, prompt, signal, baseline, current,
                    since}], now; expected: the patch of k8s.drift.drifting_status (null: nothing to write)

Set AGENTFLOW_UPDATE_CASES=1 to write what the builders return into ``expected`` (then read the diff).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentflow.engine.values import StepRequest
from agentflow.k8s.drift import drifting_status
from agentflow.k8s.events import kubernetes_events
from agentflow.k8s.netpol import NetworkConfig, build_baseline_policy, build_network_policy
from agentflow.k8s.podspec import ExecutionProfile, Owner, PodConfig, build_step_pod, profile_for
from agentflow.k8s.status import invalid_spec_status, missing_references_status, stalled_status, workflow_status
from agentflow.k8s.subworkflow import child_body
from agentflow.models import Agent, StepSpec, TemplateRef, ToolPolicy, ToolSpec
from agentflow.quality import Alarm, Subject

from .runs import drive


def owner(d: Mapping[str, Any]) -> Owner:
    return Owner(d.get("apiVersion", "agentflow.dev/v1alpha1"), d.get("kind", "Workflow"), d["name"], d["uid"])


def request(d: Mapping[str, Any]) -> StepRequest:
    return StepRequest(d.get("runId", "run-1"), d["node"], d.get("step", d["node"]), d.get("kind", "llm"),
                       int(d.get("attempt", 1)), d.get("inputs") or {})


def config(d: Mapping[str, Any]) -> PodConfig:
    snake = {"imagePullPolicy": "image_pull_policy", "callbackUrl": "callback_url",
             "defaultRuntimeClass": "default_runtime_class", "cpuRequest": "cpu_request", "cpuLimit": "cpu_limit",
             "memoryRequest": "memory_request", "memoryLimit": "memory_limit", "runAsUser": "run_as_user",
             "otlpEndpoint": "otlp_endpoint"}
    return PodConfig(**{snake.get(k, k): v for k, v in d.items()})


def selector(d: Mapping[str, Any] | None) -> tuple[str, dict[str, str]] | None:
    return (d["namespace"], dict(d["labels"])) if d else None


def profile(d: Mapping[str, Any] | None) -> ExecutionProfile:
    if not d:
        return ExecutionProfile()
    if "step" not in d:
        return ExecutionProfile(d.get("runtimeClass"), d.get("resources"), d.get("env") or {},
                                tuple((h, p) for h, p in d.get("egress") or ()))
    step = StepSpec.model_validate(d["step"])
    agent = Agent.model_validate(d["agent"]) if d.get("agent") else None
    policies = [ToolPolicy.model_validate(p) for p in d.get("policies") or ()]
    tool = ToolSpec.model_validate(d["tool"]) if isinstance(d.get("tool"), Mapping) else None
    return profile_for(step, agent, policies, tool)


def profile_dict(p: ExecutionProfile) -> dict[str, Any]:
    return {"runtimeClass": p.runtime_class, "resources": p.resources, "env": dict(p.env),
            "egress": [[h, port] for h, port in p.egress]}


def build(kind: str, i: Mapping[str, Any]) -> Any:
    if kind == "pod":
        p = profile(i.get("profile"))
        return build_step_pod(
            owner(i["owner"]), i["namespace"], request(i["request"]), config(i["config"]),
            runtime_class=i.get("runtimeClass", p.runtime_class), timeout_seconds=i.get("timeoutSeconds"),
            resources=i.get("resources", p.resources), env=i.get("env", p.env), extra_labels=i.get("extraLabels"),
        )
    if kind == "profile":
        return profile_dict(profile(i))
    if kind == "networkPolicy" and i.get("baseline"):
        net = NetworkConfig(callback_pods=selector(i.get("callbackPods")), gateway_pods=selector(i.get("gatewayPods")),
                            collector=tuple(i["collector"]) if i.get("collector") else None,  # type: ignore[arg-type]
                            collector_pods=selector(i.get("collectorPods")))
        return build_baseline_policy(i["namespace"], callback=(i["callback"][0], int(i["callback"][1])),
                                     dns=i.get("dns", True), network=net,
                                     gateway=tuple(i["gateway"]) if i.get("gateway") else None)  # type: ignore[arg-type]
    if kind == "networkPolicy":
        pods = i.get("callbackPods")
        return build_network_policy(
            owner(i["owner"]), i["namespace"], i["podName"], profile(i.get("profile")),
            callback=(i["callback"][0], int(i["callback"][1])), dns=i.get("dns", True),
            callback_pods=(pods["namespace"], pods["labels"]) if pods else None,
        )
    if kind == "status":
        h = drive(i["run"])
        a = i.get("args") or {}
        ref = a.get("outputRef")
        return workflow_status(
            h.run, generation=a.get("generation"), now=a.get("now"), max_nodes=a.get("maxNodes", 200),
            trace_id=a.get("traceId"), trace_url=a.get("traceUrl"), previous=a.get("previous") or (),
            output_ref=(lambda n: ref.format(node="outputs" if n is None else n)) if ref else None,
        )
    if kind == "events":
        h = drive(i["run"])
        return [list(e) for e in kubernetes_events(h.events, plan=h.plan)]
    if kind == "statusPatch":
        builder, now, generation = i["builder"], i["now"], i.get("generation")
        if builder == "stalled":
            return stalled_status(i.get("current") or {}, i["reason"], i["message"], now=now, generation=generation)
        if builder == "invalidSpec":
            return invalid_spec_status(i["message"], now=now, generation=generation, previous=i.get("previous") or ())
        if builder == "missingReferences":
            return missing_references_status(i["missing"], now=now, generation=generation,
                                             previous=i.get("previous") or ())
        raise ValueError(f"unknown statusPatch builder {builder!r}")
    if kind == "driftPatch":
        alarms = [Alarm(Subject(a["namespace"], a["agent"], a["prompt"]), a["signal"], a["baseline"], a["current"],
                        a["since"]) for a in i.get("alarms") or ()]
        return drifting_status(i.get("current") or {}, alarms, now=i["now"])
    if kind == "childWorkflow":
        return child_body(i["parent"], request(i["request"]), TemplateRef.model_validate(i["ref"]), i["depth"])
    raise ValueError(f"unknown case kind {kind!r}")
