{{/* Names and labels: the recommended app.kubernetes.io/* labels on every object. */}}

{{- define "grafana.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-grafana, or the release name when it already contains the chart name. */}}
{{- define "grafana.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "grafana.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "grafana.selectorLabels" -}}
app.kubernetes.io/name: {{ include "grafana.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "grafana.labels" -}}
helm.sh/chart: {{ include "grafana.chart" . }}
{{ include "grafana.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: dashboards
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{- define "grafana.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "grafana.adminSecretName" -}}
{{- default (printf "%s-admin" (include "grafana.fullname" .)) (tpl .Values.admin.existingSecret .) }}
{{- end }}

{{/* The provisioning files, from files/grafana: a symbolic link to the repository's grafana/ folder, the one docker
compose mounts (Helm reads only files inside a chart and follows the link; `helm package` stores the content). A
ConfigMap key cannot hold a "/", so provisioning/<kind>/<file> becomes the key <kind>.<file>. */}}
{{- define "grafana.provisioningFiles" -}}
{{- range $path, $_ := .Files.Glob "files/grafana/provisioning/*/*.{yaml,yml,json}" }}
{{ trimPrefix "files/grafana/provisioning/" $path | replace "/" "." }}: {{ $path }}
{{- end }}
{{- end }}

{{/* The environment the provisioning files refer to as ${NAME}: the database of the reader role, Prometheus, the
alert webhook. */}}
{{- define "grafana.env" -}}
- name: DATABASE_HOST
  value: {{ tpl .Values.database.host . | quote }}
- name: DATABASE_PORT
  value: {{ .Values.database.port | quote }}
- name: DATABASE_NAME
  value: {{ .Values.database.name | quote }}
- name: DATABASE_SSLMODE
  value: {{ .Values.database.sslmode | quote }}
- name: DATABASE_READER_USER
  value: {{ .Values.database.readerUser | quote }}
- name: DATABASE_READER_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ tpl .Values.database.existingSecret . }}
      key: DATABASE_READER_PASSWORD
- name: PROMETHEUS_URL
  value: {{ tpl .Values.prometheusUrl . | quote }}
{{- if .Values.alerting.webhookSecret }}
- name: ALERT_WEBHOOK_URL
  valueFrom:
    secretKeyRef:
      name: {{ tpl .Values.alerting.webhookSecret . }}
      key: ALERT_WEBHOOK_URL
{{- else }}
- name: ALERT_WEBHOOK_URL
  value: {{ tpl .Values.alerting.webhookUrl . | quote }}
{{- end }}
{{- end }}

{{/* Labels of the `helm test` pods: without the selector labels, so that no Service or NetworkPolicy of the chart
takes a test pod for the workload. */}}
{{- define "grafana.testLabels" -}}
helm.sh/chart: {{ include "grafana.chart" . }}
app.kubernetes.io/name: {{ include "grafana.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{/* NetworkPolicy peer: this release's `helm test` pods. */}}
{{- define "grafana.testPeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/component: test
{{- end }}
