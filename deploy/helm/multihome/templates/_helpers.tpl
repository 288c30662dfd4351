{{- define "multihome.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "multihome.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "multihome.labels" -}}
{{ include "multihome.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "multihome.secretName" -}}
{{- if .Values.secret.create -}}{{ include "multihome.fullname" . }}{{- else -}}{{ required "secret.existingSecret is required when secret.create is false" .Values.secret.existingSecret }}{{- end -}}
{{- end -}}

{{/* The gateway's config: the values' `config` with the server, audit, spool and console session key the pod
needs (the console's key from the chart's console Secret: the same in every pod). */}}
{{- define "multihome.consoleSecretName" -}}
{{ include "multihome.fullname" . | trunc 55 | trimSuffix "-" }}-console
{{- end -}}

{{- define "multihome.config" -}}
{{- $server := merge (dict "host" "0.0.0.0" "port" 4000 "drain_timeout_s" .Values.drainTimeoutSeconds) (default (dict) .Values.config.server) -}}
{{- $audit := merge (dict "dir" "/var/lib/multihome/audit") (default (dict) .Values.config.audit) -}}
{{- $metering := default (dict) .Values.config.metering -}}
{{- $spool := merge (dict "dir" "/var/lib/multihome/usage-spool") (default (dict) (get $metering "spool")) -}}
{{- $metering = merge (dict "spool" $spool) (omit $metering "spool") -}}
{{- $console := merge (dict "session_key_env" "MULTIHOME_CONSOLE_KEY") (default (dict) .Values.config.console) -}}
{{- toYaml (merge (dict "server" $server "audit" $audit "metering" $metering "console" $console) (omit .Values.config "server" "audit" "metering" "console")) -}}
{{- end -}}

{{/* The environment variables a config (a map) names by its `*_env` keys, each followed by a space. */}}
{{- define "multihome.envNames" -}}
{{- range $key, $value := . -}}
{{- if and (hasSuffix "_env" (toString $key)) (kindIs "string" $value) -}}{{ $value }} {{ end -}}
{{- if and (hasSuffix "_env" (toString $key)) (kindIs "slice" $value) -}}{{- range $value -}}{{- if kindIs "string" . -}}{{ . }} {{ end -}}{{- end -}}{{- end -}}
{{- if kindIs "map" $value -}}{{ include "multihome.envNames" $value }}{{- end -}}
{{- if and (not (hasSuffix "_env" (toString $key))) (kindIs "slice" $value) -}}{{- range $value -}}{{- if kindIs "map" . -}}{{ include "multihome.envNames" . }}{{- end -}}{{- end -}}{{- end -}}
{{- end -}}
{{- end -}}
