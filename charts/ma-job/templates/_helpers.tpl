{{/* Names and labels: the recommended app.kubernetes.io/* labels on every object. */}}

{{- define "ma-job.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "ma-job.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ma-job.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ma-job.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ma-job.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ma-job.labels" -}}
helm.sh/chart: {{ include "ma-job.chart" . }}
{{ include "ma-job.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: ma-job
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{/* The image: [<registry>/]<repository>:<tag> (tag: the chart's appVersion unless set). The registry is required,
with a one-line error naming the value, unless global.localCluster is true: a kind/minikube cluster whose node has
the images loaded (the skaffold profiles, k8s/values-<profile>.yaml). */}}
{{- define "ma-job.image" -}}
{{- $local := dig "localCluster" false (.Values.global | default dict) -}}
{{- if and (not .Values.image.registry) (not $local) -}}
{{- fail "image.registry is required (ma-job.image.registry in the umbrella chart): the registry `make images REGISTRY=...` pushed to, e.g. ghcr.io/you; on kind/minikube set global.localCluster=true instead" -}}
{{- end -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository }}{{ end -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ma-job.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ma-job.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "flink" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Flink configuration: the chart's settings, then .Values.flinkConfiguration over them. */}}
{{- define "ma-job.flinkConfiguration" -}}
{{- $conf := dict
  "taskmanager.numberOfTaskSlots" (toString .Values.taskManager.taskSlots)
  "state.backend.type" "hashmap"
  "execution.checkpointing.storage" .Values.checkpoints.storage
  "execution.checkpointing.interval" (printf "%ds" (int .Values.checkpoints.intervalSeconds))
  "execution.checkpointing.mode" "EXACTLY_ONCE"
  "execution.checkpointing.externalized-checkpoint-retention" "RETAIN_ON_CANCELLATION"
  "state.checkpoints.dir" .Values.checkpoints.dir
  "state.checkpoints.num-retained" (toString .Values.checkpoints.retained)
  "state.savepoints.dir" .Values.savepoints.dir
  "restart-strategy.type" "exponential-delay"
  "metrics.reporter.prom.factory.class" "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
  "metrics.reporter.prom.port" (toString .Values.metricsPort)
  "python.executable" "/opt/venv/bin/python"
  "python.client.executable" "/opt/venv/bin/python"
}}
{{- if .Values.savepoints.periodicInterval }}
{{- $_ := set $conf "kubernetes.operator.periodic.savepoint.interval" .Values.savepoints.periodicInterval }}
{{- end }}
{{- if .Values.highAvailability.enabled }}
{{- $_ := set $conf "high-availability.type" "kubernetes" }}
{{- $_ := set $conf "high-availability.storageDir" .Values.highAvailability.storageDir }}
{{- end }}
{{- range $key, $value := .Values.flinkConfiguration }}
{{- $_ := set $conf $key (toString $value) }}
{{- end }}
{{- toYaml $conf }}
{{- end }}

{{- define "ma-job.claimName" -}}
{{- default (printf "%s-data" (include "ma-job.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Labels of the `helm test` pods: without the selector labels, so that no Service or NetworkPolicy of the chart
takes a test pod for the workload. */}}
{{- define "ma-job.testLabels" -}}
helm.sh/chart: {{ include "ma-job.chart" . }}
app.kubernetes.io/name: {{ include "ma-job.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{/* NetworkPolicy peer: this release's `helm test` pods. */}}
{{- define "ma-job.testPeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/component: test
{{- end }}

{{/* Node selector of the Flink pods: kubernetes.io/arch from nodeArchitecture, then .Values.nodeSelector. */}}
{{- define "ma-job.nodeSelector" -}}
{{- $selector := dict -}}
{{- if .Values.nodeArchitecture }}{{ $_ := set $selector "kubernetes.io/arch" .Values.nodeArchitecture }}{{ end -}}
{{- range $key, $value := .Values.nodeSelector }}{{ $_ := set $selector $key (toString $value) }}{{ end -}}
{{- if $selector }}{{ toYaml $selector }}{{ end -}}
{{- end }}

{{/* The /flink-data volume and its mount, for the pods that write there (see checkpoints.storage). */}}
{{- define "ma-job.dataVolume" -}}
volumes:
  - name: flink-data
    persistentVolumeClaim:
      claimName: {{ include "ma-job.claimName" . }}
{{- end }}
