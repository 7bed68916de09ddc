{{/* Names and labels: the recommended app.kubernetes.io/* labels on every object. */}}

{{- define "tickpipe.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tickpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of the `helm test` pod (no workload of the release selects them). */}}
{{- define "tickpipe.testLabels" -}}
helm.sh/chart: {{ include "tickpipe.chart" . }}
app.kubernetes.io/name: {{ include "tickpipe.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: tickpipe
{{- end }}
