{{/* The chart's name, or nameOverride. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name objects are named after: release name and chart name, once. */}}
{{- define "ferry.fullname" -}}
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

{{/* The operator's objects: <fullname>-operator. */}}
{{- define "ferry.operatorName" -}}
{{- printf "%s-operator" (include "ferry.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The bundled etcd's objects: <fullname>-etcd (pods <fullname>-etcd-N). */}}
{{- define "ferry.etcdName" -}}
{{- printf "%s-etcd" (include "ferry.fullname" .) | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferry
{{- end }}

{{/* The operator pods' selector (stable across upgrades: no version in it). */}}
{{- define "ferry.operatorSelector" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The etcd pods' selector. */}}
{{- define "ferry.etcdSelector" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferry.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Ferry image, tag defaulting to the appVersion. */}}
{{- define "ferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* etcd client URLs, comma-separated: the bundled members or the external list. */}}
{{- define "ferry.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $name := include "ferry.etcdName" . }}
{{- $urls := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $urls = append $urls (printf "%s://%s-%d.%s-headless.%s.svc:2379" (ternary "https" "http" $.Values.etcd.tls.enabled) $name $i $name $.Release.Namespace) }}
{{- end }}
{{- join "," $urls }}
{{- else }}
{{- required "set etcd.enabled=true or list etcd.endpoints" (join "," .Values.etcd.endpoints) }}
{{- end }}
{{- end }}

{{/* The pod security context of the restricted Pod Security Standard. */}}
{{- define "ferry.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container security context of the restricted Pod Security Standard. */}}
{{- define "ferry.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}
