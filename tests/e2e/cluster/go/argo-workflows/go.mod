// Wrapper module: builds Argo Workflows' workflow-controller (a benchmark competitor for
// bench/argo_race.py, run only on a private loopback kwok control plane, never deployed) from
// github.com/argoproj/argo-workflows/v3. The replace is the one the module's own go.mod carries
// (a dependency's replace directives do not apply to the module that requires it).
module agentflow.local/e2e/argo-workflows

go 1.24.4

require github.com/argoproj/argo-workflows/v3 v3.7.3

replace github.com/olekukonko/tablewriter => github.com/olekukonko/tablewriter v0.0.5
