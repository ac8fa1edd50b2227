{{/* Common names and labels. */}}
{{- define "belay.fullname" -}}
{{- if contains "belay" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-belay" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "belay.server.name" -}}{{ include "belay.fullname" . }}-server{{- end -}}
{{- define "belay.agent.name" -}}{{ include "belay.fullname" . }}-agent{{- end -}}

{{- define "belay.labels" -}}
app.kubernetes.io/part-of: belay
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "belay.server.selector" -}}
app.kubernetes.io/name: belay-server
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "belay.agent.selector" -}}
app.kubernetes.io/name: belay-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* registry/name:tag of an image: (dict "name" "belay-server" "root" $) */}}
{{- define "belay.image" -}}
{{- $v := .root.Values.image -}}
{{- $tag := default .root.Chart.AppVersion $v.tag -}}
{{- if $v.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $v.registry) .name $tag -}}
{{- else -}}
{{- printf "%s:%s" .name $tag -}}
{{- end -}}
{{- end -}}

{{- define "belay.server.url" -}}
{{- if .Values.agent.server.url -}}
{{ .Values.agent.server.url }}
{{- else -}}
{{ printf "https://%s.%s.svc:%v" (include "belay.server.name" .) .Release.Namespace .Values.server.service.grpcPort }}
{{- end -}}
{{- end -}}

{{- define "belay.sqlite" -}}{{ not .Values.server.database.urlSecret }}{{- end -}}
