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

{{- define "agentflow.tokenSecret" -}}
{{- default (printf "%s-token" (include "agentflow.fullname" .)) .Values.tokenKey.existingSecret }}
{{- end }}

{{/* The URL step pods reach the callback server at: callback.url, else the Service's DNS name. */}}
{{- define "agentflow.callbackURL" -}}
{{- if .Values.callback.url }}
{{- .Values.callback.url }}
{{- else }}
{{- printf "http://%s.%s.svc.%s:%d" (include "agentflow.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.callback.port) }}
{{- end }}
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
