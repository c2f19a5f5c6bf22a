{{/* Names. With the release called "stablelb" every object is named as in manifests/ (stablelb-controller). */}}
{{- define "stablelb.name" -}}
{{- default "stablelb" .Values.nameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "stablelb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "stablelb.name" . -}}
{{- if contains $name .Release.Name -}}
{{- printf "%s-controller" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s-controller" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "stablelb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stablelb.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "stablelb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stablelb.name" . }}-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stablelb.labels" -}}
{{ include "stablelb.selectorLabels" . }}
app.kubernetes.io/part-of: stablelb
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "stablelb.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}
