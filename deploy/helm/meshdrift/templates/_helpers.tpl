{{/*
The app name: the chart's, unless nameOverride says otherwise.
*/}}
{{- define "meshdrift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the objects: the release's when it contains the app name (as
`helm install meshdrift ...` does), else release-app; fullnameOverride wins.
*/}}
{{- define "meshdrift.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "meshdrift.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels every object carries. No helm.sh/chart or managed-by labels: with
default values the chart renders exactly what deploy/kubernetes holds.
*/}}
{{- define "meshdrift.labels" -}}
app.kubernetes.io/name: {{ include "meshdrift.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The agent's pods: what the DaemonSet, the Service, the NetworkPolicy and
the ServiceMonitor select.
*/}}
{{- define "meshdrift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshdrift.name" . }}
app.kubernetes.io/component: agent
{{- end }}

{{/*
Labels of the agent's objects: the common ones and the component.
*/}}
{{- define "meshdrift.agentLabels" -}}
{{ include "meshdrift.selectorLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The image reference: repository:tag, @digest when one is pinned.
*/}}
{{- define "meshdrift.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
auth.mode, checked.
*/}}
{{- define "meshdrift.authMode" -}}
{{- $mode := .Values.auth.mode | default "none" }}
{{- if not (has $mode (list "none" "kubernetes")) }}
{{- fail (printf "auth.mode must be none or kubernetes, not %q" $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/*
Where the TLS secret is mounted.
*/}}
{{- define "meshdrift.tlsDir" -}}
/etc/meshdrift/tls
{{- end }}
