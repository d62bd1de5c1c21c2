{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "chatterbox-tts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name for the chart's objects. */}}
{{- define "chatterbox-tts.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "chatterbox-tts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chatterbox-tts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatterbox-tts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "chatterbox-tts.labels" -}}
helm.sh/chart: {{ include "chatterbox-tts.chart" . }}
{{ include "chatterbox-tts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "chatterbox-tts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chatterbox-tts.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the pods read TTS_API_KEYS and AWS credentials from: the user's existingSecret or the chart's. */}}
{{- define "chatterbox-tts.secretName" -}}
{{- .Values.auth.existingSecret | default (include "chatterbox-tts.fullname" .) }}
{{- end }}

{{/* Whether the chart renders its own Secret: no existingSecret, and something to put in it. */}}
{{- define "chatterbox-tts.createSecret" -}}
{{- if and (not .Values.auth.existingSecret) (or .Values.auth.apiKeys .Values.auth.awsAccessKeyId .Values.auth.awsSecretAccessKey) }}true{{ end }}
{{- end }}

{{/* Whether pods reference a Secret at all. */}}
{{- define "chatterbox-tts.useSecret" -}}
{{- if or .Values.auth.existingSecret (include "chatterbox-tts.createSecret" .) }}true{{ end }}
{{- end }}

{{/* The container image: gpu.image when the GPU variant is on and set, else image; tag defaults to appVersion. */}}
{{- define "chatterbox-tts.image" -}}
{{- $repo := .Values.image.repository }}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.gpu.enabled }}
{{- $repo = .Values.gpu.image.repository | default $repo }}
{{- $tag = .Values.gpu.image.tag | default $tag }}
{{- end }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/* terminationGracePeriodSeconds: preStop sleep + the server's drain grace (rounded up) + a margin. */}}
{{- define "chatterbox-tts.terminationGracePeriodSeconds" -}}
{{- $d := .Values.drain }}
{{- add (int $d.preStopSleepSeconds) (ceil $d.shutdownGraceSeconds | int) (int $d.terminationMarginSeconds) }}
{{- end }}

{{/* Refuse value sets that cannot work, with a message saying what to change. */}}
{{- define "chatterbox-tts.validate" -}}
{{- if and .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled }}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are both true: enable at most one autoscaler (KEDA's ScaledObject creates its own HPA for the Deployment)." }}
{{- end }}
{{- if lt (int .Values.drain.terminationMarginSeconds) 1 }}
{{- fail "drain.terminationMarginSeconds must be at least 1, so Kubernetes' SIGKILL comes after the server's drain grace." }}
{{- end }}
{{- if and .Values.voiceStore.url (not (hasPrefix "s3://" .Values.voiceStore.url)) }}
{{- fail (printf "voiceStore.url must be empty (per-pod local voices) or s3://bucket/prefix, not %q." .Values.voiceStore.url) }}
{{- end }}
{{- end }}
