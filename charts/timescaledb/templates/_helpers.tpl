{{/* Names and labels: the recommended app.kubernetes.io/* labels on every object. */}}

{{- define "timescaledb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Always <release>-timescaledb (unless overridden): the other charts' defaults (DATABASE_URL, the Secret name)
refer to it by that name. */}}
{{- define "timescaledb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "timescaledb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "timescaledb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "timescaledb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "timescaledb.labels" -}}
helm.sh/chart: {{ include "timescaledb.chart" . }}
{{ include "timescaledb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: database
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{- define "timescaledb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "timescaledb.secretName" -}}
{{- default (include "timescaledb.fullname" .) (tpl .Values.auth.existingSecret .) }}
{{- end }}

{{/* The Secret's keys: the owner's password (POSTGRES_PASSWORD at initdb), and the writer's and reader's, which
the migrator gives to the roles it creates. The same names as the environment variables of src/tickpipe/config.py. */}}
{{- define "timescaledb.secretKeys" -}}
{{- list "DATABASE_PASSWORD" "DATABASE_WRITER_PASSWORD" "DATABASE_READER_PASSWORD" | toJson }}
{{- end }}

{{/* Labels of the `helm test` pods: without the selector labels, so that no Service or NetworkPolicy of the chart
takes a test pod for the workload. */}}
{{- define "timescaledb.testLabels" -}}
helm.sh/chart: {{ include "timescaledb.chart" . }}
app.kubernetes.io/name: {{ include "timescaledb.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{/* NetworkPolicy peer: this release's `helm test` pods. */}}
{{- define "timescaledb.testPeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/component: test
{{- end }}

{{/* The backup CronJob's pods: labels of their own, so that neither the Service nor the StatefulSet selects them. */}}
{{- define "timescaledb.backupSelectorLabels" -}}
app.kubernetes.io/name: {{ include "timescaledb.name" . }}-backup
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "timescaledb.backupLabels" -}}
helm.sh/chart: {{ include "timescaledb.chart" . }}
{{ include "timescaledb.backupSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: backup
app.kubernetes.io/part-of: tickpipe
{{- end }}
