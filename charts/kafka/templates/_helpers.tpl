{{/* Names and labels: the recommended app.kubernetes.io/* labels on every object. */}}

{{- define "kafka.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "kafka.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kafka.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kafka.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kafka.labels" -}}
helm.sh/chart: {{ include "kafka.chart" . }}
{{ include "kafka.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: kafka
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{- define "kafka.clusterName" -}}
{{- tpl .Values.clusterName . | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/* Labels of the `helm test` pods: without the selector labels, so that no Service or NetworkPolicy of the chart
takes a test pod for the workload. */}}
{{- define "kafka.testLabels" -}}
helm.sh/chart: {{ include "kafka.chart" . }}
app.kubernetes.io/name: {{ include "kafka.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{/* NetworkPolicy peer: this release's `helm test` pods. */}}
{{- define "kafka.testPeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/component: test
{{- end }}

{{/* One-line errors for listener settings that would leave clients locked out or the ACLs pointless. */}}
{{- define "kafka.checkListeners" -}}
{{- if and (not .Values.listener.enabled) (not .Values.tlsListener.enabled) -}}
{{- fail "kafka: listener.enabled and tlsListener.enabled are both false: no client could connect" -}}
{{- end -}}
{{- if and .Values.authorization.enabled (not .Values.tlsListener.enabled) -}}
{{- fail "kafka: authorization.enabled needs tlsListener.enabled (users authenticate on the TLS listener)" -}}
{{- end -}}
{{- if and .Values.authorization.enabled .Values.listener.enabled -}}
{{- fail "kafka: authorization.enabled needs listener.enabled=false (the plain listener's anonymous clients would be refused everything)" -}}
{{- end -}}
{{- end }}

{{/* The bootstrap address clients use: the TLS listener when it is on, else the plain one. */}}
{{- define "kafka.bootstrap" -}}
{{- $port := ternary .Values.tlsListener.port .Values.listener.port .Values.tlsListener.enabled -}}
{{- printf "%s-kafka-bootstrap:%v" (include "kafka.clusterName" .) $port -}}
{{- end }}
