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

{{/* -- Kafka TLS and SASL/SCRAM (kafkaSecurity): the files are mounted, their paths set in the ConfigMap, and the
password read from its Secret; never a value in the manifest. -- */}}

{{- define "ingestor.kafkaCaDir" -}}/etc/tickpipe/kafka-ca{{- end }}
{{- define "ingestor.kafkaClientDir" -}}/etc/tickpipe/kafka-client{{- end }}

{{/* One-line errors for settings the ingestor would refuse at start-up, at install time instead. */}}
{{- define "ingestor.checkKafkaSecurity" -}}
{{- $security := .Values.kafkaSecurity -}}
{{- $protocol := default "PLAINTEXT" .Values.env.KAFKA_SECURITY_PROTOCOL -}}
{{- if hasPrefix "SASL_" $protocol -}}
{{- if not $security.passwordSecret.name -}}
{{- fail (printf "ingestor: env.KAFKA_SECURITY_PROTOCOL=%s needs kafkaSecurity.passwordSecret.name (the Secret with KAFKA_SASL_PASSWORD)" $protocol) -}}
{{- end -}}
{{- if not .Values.env.KAFKA_SASL_USERNAME -}}
{{- fail (printf "ingestor: env.KAFKA_SECURITY_PROTOCOL=%s needs env.KAFKA_SASL_USERNAME" $protocol) -}}
{{- end -}}
{{- end -}}
{{- if and $security.ca.secretName $security.ca.configMapName -}}
{{- fail "ingestor: set kafkaSecurity.ca.secretName or kafkaSecurity.ca.configMapName, not both" -}}
{{- end -}}
{{- end }}

{{/* ConfigMap entries: where the mounted files are, and the spill buffer. */}}
{{- define "ingestor.derivedEnv" -}}
{{- $security := .Values.kafkaSecurity -}}
{{- if or $security.ca.secretName $security.ca.configMapName }}
KAFKA_SSL_CA_LOCATION: {{ printf "%s/%s" (include "ingestor.kafkaCaDir" .) $security.ca.key | quote }}
{{- end }}
{{- with $security.clientCertificate }}
{{- if .secretName }}
KAFKA_SSL_CERTIFICATE_LOCATION: {{ printf "%s/%s" (include "ingestor.kafkaClientDir" $) .certificateKey | quote }}
KAFKA_SSL_KEY_LOCATION: {{ printf "%s/%s" (include "ingestor.kafkaClientDir" $) .keyKey | quote }}
{{- end }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
INGEST_LEADER_ELECTION: kubernetes
INGEST_LEASE_NAME: {{ include "ingestor.fullname" . | quote }}
INGEST_STANDBY_BUFFER_SECONDS: {{ .Values.leaderElection.standbyBufferSeconds | quote }}
{{- end }}
{{- if .Values.spill.enabled }}
INGEST_SPILL_DIR: {{ .Values.spill.mountPath | quote }}
INGEST_SPILL_MAX_BYTES: {{ include "ingestor.spillBudgetBytes" . | quote }}
{{- else }}
INGEST_SPILL_MAX_BYTES: "0"
{{- end }}
{{- end }}

{{/* spill.size (a quantity in Ki, Mi, Gi or Ti, or plain bytes) in bytes, and the budget: budgetPercent of it. */}}
{{- define "ingestor.spillSizeBytes" -}}
{{- $size := toString .Values.spill.size -}}
{{- $unit := regexFind "[KMGT]i$" $size -}}
{{- $factor := get (dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776) $unit -}}
{{- mul (trimSuffix $unit $size | int64) $factor -}}
{{- end }}

{{- define "ingestor.spillBudgetBytes" -}}
{{- div (mul (include "ingestor.spillSizeBytes" . | int64) (int64 .Values.spill.budgetPercent)) 100 -}}
{{- end }}

{{/* The password, from its Secret. */}}
{{- define "ingestor.secretEnv" -}}
{{- with .Values.kafkaSecurity.passwordSecret.name }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ tpl . $ | quote }}
      key: {{ $.Values.kafkaSecurity.passwordSecret.key | quote }}
{{- end }}
{{- with .Values.coingecko.apiKeySecret.name }}
- name: COINGECKO_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ tpl . $ | quote }}
      key: {{ $.Values.coingecko.apiKeySecret.key | quote }}
{{- end }}
{{- end }}

{{/* The container's env entries: the secret ones, and with leaderElection the pod's own name and namespace. */}}
{{- define "ingestor.podEnv" -}}
{{ include "ingestor.secretEnv" . }}
{{- if .Values.leaderElection.enabled }}
- name: INGEST_IDENTITY
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: INGEST_LEASE_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
{{- end }}

{{- define "ingestor.kafkaVolumeMounts" -}}
{{- $security := .Values.kafkaSecurity -}}
{{- if or $security.ca.secretName $security.ca.configMapName }}
- name: kafka-ca
  mountPath: {{ include "ingestor.kafkaCaDir" . }}
  readOnly: true
{{- end }}
{{- if $security.clientCertificate.secretName }}
- name: kafka-client-certificate
  mountPath: {{ include "ingestor.kafkaClientDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Whole Secrets/ConfigMaps, not subPath mounts: a rotated CA (Strimzi renews its cluster CA) reaches the pod. */}}
{{- define "ingestor.kafkaVolumes" -}}
{{- $security := .Values.kafkaSecurity -}}
{{- if $security.ca.secretName }}
- name: kafka-ca
  secret:
    secretName: {{ tpl $security.ca.secretName . | quote }}
    defaultMode: 0440
    items:
      - key: {{ $security.ca.key | quote }}
        path: {{ $security.ca.key | quote }}
{{- else if $security.ca.configMapName }}
- name: kafka-ca
  configMap:
    name: {{ tpl $security.ca.configMapName . | quote }}
    defaultMode: 0440
    items:
      - key: {{ $security.ca.key | quote }}
        path: {{ $security.ca.key | quote }}
{{- end }}
{{- with $security.clientCertificate }}
{{- if .secretName }}
- name: kafka-client-certificate
  secret:
    secretName: {{ tpl .secretName $ | quote }}
    defaultMode: 0440
    items:
      - key: {{ .certificateKey | quote }}
        path: {{ .certificateKey | quote }}
      - key: {{ .keyKey | quote }}
        path: {{ .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
