{{/* The prefix of every object's name: the release name, or "meshwright" for a release named so. */}}
{{- define "meshwright.fullname" -}}
{{- if contains "meshwright" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-meshwright" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "meshwright.labels" -}}
app.kubernetes.io/name: meshwright
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "meshwright.selectorLabels" -}}
app.kubernetes.io/name: meshwright
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end -}}

{{- define "meshwright.serviceAccountName" -}}
{{ include "meshwright.fullname" . }}-controller-manager
{{- end -}}
