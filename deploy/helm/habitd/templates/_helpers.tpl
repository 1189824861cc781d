{{/* The release's objects are named after the release (habitd when installed as habitd). */}}
{{- define "habitd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "habitd.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "habitd.labels" -}}
{{ include "habitd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "habitd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "habitd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "habitd.tokenSecret" -}}
{{- if .Values.apiToken.existingSecret -}}
{{- .Values.apiToken.existingSecret -}}
{{- else if .Values.apiToken.value -}}
{{- printf "%s-api-token" (include "habitd.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap of delivered baselines, if any: an existing one, or the chart's. */}}
{{- define "habitd.baselinesConfigMap" -}}
{{- if .Values.baselines.existingConfigMap -}}
{{- .Values.baselines.existingConfigMap -}}
{{- else if .Values.baselines.files -}}
{{- printf "%s-baselines" (include "habitd.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The alert sinks, as habitd's `alerts` key. */}}
{{- define "habitd.sinks" -}}
{{- $sinks := list -}}
{{- if .Values.alerts.stdout -}}{{- $sinks = append $sinks "stdout" -}}{{- end -}}
{{- if .Values.alerts.file.enabled -}}{{- $sinks = append $sinks "file:/var/log/habitd/alerts.jsonl" -}}{{- end -}}
{{- with .Values.alerts.http.url -}}{{- $sinks = append $sinks . -}}{{- end -}}
{{- if not $sinks -}}{{- fail "alerts: enable at least one sink (stdout, file or http)" -}}{{- end -}}
{{- toJson $sinks -}}
{{- end -}}
