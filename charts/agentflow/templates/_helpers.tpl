{{/* The chart's name. */}}
{{- define "agentflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: names the Deployment, Service, ServiceAccount and cluster-scoped RBAC. */}}
{{- define "agentflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "agentflow.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "agentflow.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "agentflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agentflow.labels" -}}
helm.sh/chart: {{ include "agentflow.chart" . }}
{{ include "agentflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentflow
app.kubernetes.io/component: operator
{{- end }}

{{- define "agentflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "agentflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The step pods' image: steps.image.repository, tagged steps.image.tag or the chart's appVersion. */}}
{{- define "agentflow.stepImage" -}}
{{- printf "%s:%s" .Values.steps.image.repository (default .Chart.AppVersion .Values.steps.image.tag) }}
{{- end }}

{{/* The Secret and key of the PostgreSQL DSN. */}}
{{- define "agentflow.postgresSecret" -}}
{{- if .Values.postgres.existingSecret }}
{{- .Values.postgres.existingSecret }}
{{- else if .Values.postgres.dsn }}
{{- printf "%s-postgres" (include "agentflow.fullname" .) }}
{{- else }}
{{- fail "set postgres.existingSecret (a Secret holding the DSN) or postgres.dsn" }}
{{- end }}
{{- end }}

{{/* The Secret of the approval signing key: signingKey.existingSecret, else the chart's <fullname>-signing. */}}
{{- define "agentflow.signingSecret" -}}
{{- default (printf "%s-signing" (include "agentflow.fullname" .)) .Values.signingKey.existingSecret }}
{{- end }}

{{/* The ConfigMap of the model endpoint policy (models.endpoints), mounted in the operator and the gateway. */}}
{{- define "agentflow.modelEndpointsConfigMap" -}}
{{- printf "%s-model-endpoints" (include "agentflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Pods by label for the operator's --callback-pods/--gateway-pods: (list NAMESPACE SELECTOR-LABELS-YAML) ->
NAMESPACE:key=value,key=value (keys sorted).
*/}}
{{- define "agentflow.podsFlag" -}}
{{- $pairs := list }}
{{- range $key, $value := fromYaml (index . 1) }}{{ $pairs = append $pairs (printf "%s=%s" $key $value) }}{{ end }}
{{- printf "%s:%s" (index . 0) (join "," $pairs) }}
{{- end }}

{{/*
The URL step pods reach the callback server at: callback.url, else the starting replica's own pod IP
($(POD_IP), expanded by the kubelet from the downward API): no cluster DNS needed.
*/}}
{{- define "agentflow.callbackURL" -}}
{{- if .Values.callback.url }}
{{- .Values.callback.url }}
{{- else }}
{{- printf "http://$(POD_IP):%d" (int .Values.callback.port) }}
{{- end }}
{{- end }}

{{/* The name kopf manages its admission configurations under (settings.admission.managed in controller/main.py). */}}
{{- define "agentflow.webhookConfiguration" -}}
agentflow.dev
{{- end }}

{{/* The gateway's objects: its own app.kubernetes.io/name, so the operator's selectors never match its pods. */}}
{{- define "agentflow.gatewayName" -}}
{{- printf "%s-gateway" (include "agentflow.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentflow.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-gateway" (include "agentflow.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agentflow.gatewayLabels" -}}
helm.sh/chart: {{ include "agentflow.chart" . }}
{{ include "agentflow.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentflow
app.kubernetes.io/component: gateway
{{- end }}

{{- define "agentflow.gatewayServiceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "agentflow.gatewayName" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The URL step pods reach the gateway at: gateway.url, else the gateway Service's DNS name. */}}
{{- define "agentflow.gatewayURL" -}}
{{- if .Values.gateway.url }}
{{- .Values.gateway.url }}
{{- else }}
{{- printf "http://%s.%s.svc.%s:%d" (include "agentflow.gatewayName" .) .Release.Namespace .Values.clusterDomain (int .Values.gateway.port) }}
{{- end }}
{{- end }}

{{/* One NetworkPolicy egress rule as YAML: (list TO PORTS PROTOCOL); an empty TO allows any address. */}}
{{- define "agentflow.egressRule" -}}
{{- $to := index . 0 }}
{{- $ports := list }}
{{- range index . 1 }}{{ $ports = append $ports (dict "port" (int .) "protocol" (index $ 2)) }}{{ end }}
{{- $rule := dict "ports" $ports }}
{{- if $to }}{{ $_ := set $rule "to" $to }}{{ end }}
{{- toYaml $rule }}
{{- end }}

{{/* "true" when the replicas share the work (--shards auto): sharding.enabled and more than one replica; else
kopf peering (one acts). */}}
{{- define "agentflow.sharded" -}}
{{- if and .Values.sharding.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}
