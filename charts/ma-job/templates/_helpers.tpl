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
- name: flink-data
  persistentVolumeClaim:
    claimName: {{ include "ma-job.claimName" . }}
{{- end }}

{{/* -- TLS files and the Kafka password. The CA certificates are mounted (whole Secrets/ConfigMaps, no subPath, so
a rotated CA reaches the pods), their paths set in the ConfigMap, the password read from its Secret. -- */}}

{{- define "ma-job.checkSecurity" -}}
{{- $protocol := default "PLAINTEXT" .Values.env.KAFKA_SECURITY_PROTOCOL -}}
{{- if hasPrefix "SASL_" $protocol -}}
{{- if not .Values.kafkaSecurity.passwordSecret.name -}}
{{- fail (printf "ma-job: env.KAFKA_SECURITY_PROTOCOL=%s needs kafkaSecurity.passwordSecret.name (the Secret with KAFKA_SASL_PASSWORD)" $protocol) -}}
{{- end -}}
{{- if not .Values.env.KAFKA_SASL_USERNAME -}}
{{- fail (printf "ma-job: env.KAFKA_SECURITY_PROTOCOL=%s needs env.KAFKA_SASL_USERNAME" $protocol) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.kafkaSecurity.ca.secretName .Values.kafkaSecurity.ca.configMapName -}}
{{- fail "ma-job: set kafkaSecurity.ca.secretName or kafkaSecurity.ca.configMapName, not both" -}}
{{- end -}}
{{- if and .Values.database.ca.secretName .Values.database.ca.configMapName -}}
{{- fail "ma-job: set database.ca.secretName or database.ca.configMapName, not both" -}}
{{- end -}}
{{- end }}

{{/* (name, mount directory, Secret, ConfigMap, keys) of each certificate volume that is configured. */}}
{{- define "ma-job.certificateVolumes" -}}
{{- $volumes := list -}}
{{- with .Values.kafkaSecurity.ca }}
{{- if or .secretName .configMapName }}
{{- $volumes = append $volumes (dict "name" "kafka-ca" "dir" "/etc/tickpipe/kafka-ca" "secret" .secretName "configMap" .configMapName "keys" (list .key)) }}
{{- end }}
{{- end }}
{{- with .Values.kafkaSecurity.clientCertificate }}
{{- if .secretName }}
{{- $volumes = append $volumes (dict "name" "kafka-client-certificate" "dir" "/etc/tickpipe/kafka-client" "secret" .secretName "configMap" "" "keys" (list .certificateKey .keyKey)) }}
{{- end }}
{{- end }}
{{- with .Values.database.ca }}
{{- if or .secretName .configMapName }}
{{- $volumes = append $volumes (dict "name" "database-ca" "dir" "/etc/tickpipe/database-ca" "secret" .secretName "configMap" .configMapName "keys" (list .key)) }}
{{- end }}
{{- end }}
{{- toJson $volumes }}
{{- end }}

{{- define "ma-job.derivedEnv" -}}
{{- with .Values.kafkaSecurity.ca }}
{{- if or .secretName .configMapName }}
KAFKA_SSL_CA_LOCATION: {{ printf "/etc/tickpipe/kafka-ca/%s" .key | quote }}
{{- end }}
{{- end }}
{{- with .Values.kafkaSecurity.clientCertificate }}
{{- if .secretName }}
KAFKA_SSL_CERTIFICATE_LOCATION: {{ printf "/etc/tickpipe/kafka-client/%s" .certificateKey | quote }}
KAFKA_SSL_KEY_LOCATION: {{ printf "/etc/tickpipe/kafka-client/%s" .keyKey | quote }}
{{- end }}
{{- end }}
{{- with .Values.database.ca }}
{{- if or .secretName .configMapName }}
DATABASE_SSL_ROOT_CERT: {{ printf "/etc/tickpipe/database-ca/%s" .key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ma-job.certificateMounts" -}}
{{- range include "ma-job.certificateVolumes" . | fromJsonArray }}
- name: {{ .name }}
  mountPath: {{ .dir }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "ma-job.certificateVolumeSources" -}}
{{- range include "ma-job.certificateVolumes" . | fromJsonArray }}
- name: {{ .name }}
  {{- if .secret }}
  secret:
    secretName: {{ tpl .secret $ | quote }}
  {{- else }}
  configMap:
    name: {{ tpl .configMap $ | quote }}
  {{- end }}
    defaultMode: 0440
    items:
      {{- range .keys }}
      - key: {{ . | quote }}
        path: {{ . | quote }}
      {{- end }}
{{- end }}
{{- end }}
