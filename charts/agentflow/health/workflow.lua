-- Argo CD health check of AgentFlow Workflows (agentflow.dev/v1alpha1).
--
-- Argo CD gives a custom resource it has no check for no health at all. Install this script in argocd-cm
-- (charts/agentflow/README.md, "Argo CD") as resource.customizations.health.agentflow.dev_Workflow.
-- It reads what operator/agentflow/k8s/status.py writes:
--
--   status.phase                      health
--   (none yet, or observedGeneration
--    behind metadata.generation)      Progressing   the operator has not acted on this spec yet
--   Pending, Running                  Progressing
--   Waiting  (a step awaits approval) Suspended     paused until a human approves: `agentflow approve`
--   Suspended (spec.suspend: true)    Suspended     paused until spec.suspend is false
--   Succeeded                         Healthy
--   Failed, Cancelled                 Degraded
--
-- tests/unit/k8s/test_gitops_health.py runs this file in gopher-lua (the Lua of Argo CD) over the statuses
-- status.py produces for runs in every phase.
hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the AgentFlow operator"
  return hs
end
local gen = obj.metadata.generation
local seen = obj.status.observedGeneration
if gen ~= nil and seen ~= nil and seen < gen then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. gen
  return hs
end
local phase = obj.status.phase
local message = obj.status.message or ("Workflow " .. phase .. " (" .. (obj.status.progress or "") .. ")")
hs.message = message
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
elseif phase == "Waiting" or phase == "Suspended" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
return hs
