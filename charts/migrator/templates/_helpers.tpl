{{/* Names and labels: the recommended app.kubernetes.io/* labels on every object. */}}

{{- define "migrator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "migrator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "migrator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "migrator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "migrator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "migrator.labels" -}}
helm.sh/chart: {{ include "migrator.chart" . }}
{{ include "migrator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: migrator
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{/* The image: [<registry>/]<repository>:<tag> (tag: the chart's appVersion unless set). The registry is required,
with a one-line error naming the value, unless global.localCluster is true: a kind/minikube cluster whose node has
the images loaded (the skaffold profiles, k8s/values-<profile>.yaml). */}}
{{- define "migrator.image" -}}
{{- $local := dig "localCluster" false (.Values.global | default dict) -}}
{{- if and (not .Values.image.registry) (not $local) -}}
{{- fail "image.registry is required (migrator.image.registry in the umbrella chart): the registry `make images REGISTRY=...` pushed to, e.g. ghcr.io/you; on kind/minikube set global.localCluster=true instead" -}}
{{- end -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository }}{{ end -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The container's environment: plain values, then the passwords from the Secret. */}}
{{- define "migrator.env" -}}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ tpl (toString $value) $ | quote }}
{{- end }}
{{- range list "DATABASE_PASSWORD" "DATABASE_WRITER_PASSWORD" "DATABASE_READER_PASSWORD" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ tpl $.Values.database.existingSecret $ }}
      key: {{ . }}
{{- end }}
{{- if or .Values.database.ca.secretName .Values.database.ca.configMapName }}
- name: DATABASE_SSL_ROOT_CERT
  value: {{ printf "/etc/tickpipe/database-ca/%s" .Values.database.ca.key | quote }}
{{- end }}
{{- end }}

{{/* The database's CA (database.ca), mounted whole (no subPath: a renewed CA reaches a new pod). */}}
{{- define "migrator.caVolume" -}}
{{- with .Values.database.ca }}
{{- if and .secretName .configMapName }}
{{- fail "migrator: set database.ca.secretName or database.ca.configMapName, not both" }}
{{- end }}
{{- if or .secretName .configMapName }}
- name: database-ca
  {{- if .secretName }}
  secret:
    secretName: {{ tpl .secretName $ | quote }}
  {{- else }}
  configMap:
    name: {{ tpl .configMapName $ | quote }}
  {{- end }}
    defaultMode: 0440
    items:
      - key: {{ .key | quote }}
        path: {{ .key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of the `helm test` pods: without the selector labels, so that no Service or NetworkPolicy of the chart
takes a test pod for the workload. */}}
{{- define "migrator.testLabels" -}}
helm.sh/chart: {{ include "migrator.chart" . }}
app.kubernetes.io/name: {{ include "migrator.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: tickpipe
{{- end }}

{{/* NetworkPolicy peer: this release's `helm test` pods. */}}
{{- define "migrator.testPeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/component: test
{{- end }}
