{{/* Names and labels (recommended app.kubernetes.io/* labels on every object). */}}

{{- define "ingestor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-ingestor, or the release name when it already contains the chart name. */}}
{{- define "ingestor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ingestor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ingestor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ingestor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ingestor.labels" -}}
helm.sh/chart: {{ include "ingestor.chart" . }}
{{ include "ingestor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: ingestor
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{- define "ingestor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ingestor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: [<registry>/]<repository>:<tag> (tag: the chart's appVersion unless set). The registry is required,
with a one-line error naming the value, unless global.localCluster is true: a kind/minikube cluster whose node has
the images loaded (the skaffold profiles, k8s/values-<profile>.yaml). */}}
{{- define "ingestor.image" -}}
{{- $local := dig "localCluster" false (.Values.global | default dict) -}}
{{- if and (not .Values.image.registry) (not $local) -}}
{{- fail "image.registry is required (ingestor.image.registry in the umbrella chart): the registry `make images REGISTRY=...` pushed to, e.g. ghcr.io/you; on kind/minikube set global.localCluster=true instead" -}}
{{- end -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository }}{{ end -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ingestor.metricsPort" -}}
{{- .Values.env.METRICS_PORT | int }}
{{- end }}

{{/* Labels of the `helm test` pods: without the selector labels, so that no Service or NetworkPolicy of the chart
takes a test pod for the workload. */}}
{{- define "ingestor.testLabels" -}}
helm.sh/chart: {{ include "ingestor.chart" . }}
app.kubernetes.io/name: {{ include "ingestor.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{/* NetworkPolicy peer: this release's `helm test` pods. */}}
{{- define "ingestor.testPeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/component: test
{{- end }}

{{/* The simulated exchange (sim.enabled): labels of its own, so that nothing of the ingestor selects it. */}}
{{- define "ingestor.simSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ingestor.name" . }}-sim
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ingestor.simLabels" -}}
helm.sh/chart: {{ include "ingestor.chart" . }}
{{ include "ingestor.simSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: exchange-simulator
app.kubernetes.io/part-of: tickpipe
{{- end }}
