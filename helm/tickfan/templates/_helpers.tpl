{{/* vim: set filetype=mustache: */}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "tickfan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name (release-chart, or the release name alone when it
already contains the chart name). Truncated to 63 characters (DNS label).
*/}}
{{- define "tickfan.fullname" -}}
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

{{/* name-version, as used by the helm.sh/chart label. */}}
{{- define "tickfan.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "tickfan.labels" -}}
helm.sh/chart: {{ include "tickfan.chart" . }}
{{ include "tickfan.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: edge
app.kubernetes.io/part-of: tickfan
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: stable across upgrades (never add mutable labels here). */}}
{{- define "tickfan.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tickfan.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "tickfan.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tickfan.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Container image reference (digest wins over tag). */}}
{{- define "tickfan.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* Port name of the operators' routes (/metrics, probes): `admin` when the admin listener is on. */}}
{{- define "tickfan.opsPort" -}}
{{- if .Values.adminPort }}admin{{ else }}http{{ end }}
{{- end }}

{{/* Seconds the preStop hook delays SIGTERM (0 when there is no hook). */}}
{{- define "tickfan.preStopSeconds" -}}
{{- if eq .Values.lifecycle.preStop.mode "none" }}0{{ else }}{{ .Values.lifecycle.preStop.seconds | int }}{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value given, or computed as
preStop + shutdownGrace + margin. Kubernetes counts the preStop hook inside
the grace period, and tickfan exits at the latest shutdownGrace after SIGTERM.
*/}}
{{- define "tickfan.terminationGracePeriodSeconds" -}}
{{- $min := add (include "tickfan.preStopSeconds" . | int) (.Values.drain.shutdownGraceSeconds | int) (.Values.drain.marginSeconds | int) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $min }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding JWT key material ("" when none is used). */}}
{{- define "tickfan.jwtSecretName" -}}
{{- if .Values.jwt.existingSecret }}
{{- .Values.jwt.existingSecret }}
{{- else if or .Values.jwt.secret .Values.jwt.publicKey .Values.jwt.jwks }}
{{- include "tickfan.fullname" . }}
{{- end }}
{{- end }}

{{/*
JWT files to mount: a list of {key, path, env, prefix} dicts as JSON.
key = key in the Secret, path = file name under jwt.mountPath.
*/}}
{{- define "tickfan.jwtFiles" -}}
{{- $files := list }}
{{- $ex := .Values.jwt.existingSecret }}
{{- $k := .Values.jwt.existingSecretKeys }}
{{- if or (and $ex $k.secret) (and (not $ex) .Values.jwt.secret) }}
{{- $files = append $files (dict "key" (ternary $k.secret "jwt-secret" (not (empty $ex))) "path" "jwt-secret" "env" "TICKFAN_JWT_SECRET" "prefix" "@") }}
{{- end }}
{{- if or (and $ex $k.publicKey) (and (not $ex) .Values.jwt.publicKey) }}
{{- $files = append $files (dict "key" (ternary $k.publicKey "jwt-public-key.pem" (not (empty $ex))) "path" "jwt-public-key.pem" "env" "TICKFAN_JWT_PUBLIC_KEY" "prefix" "") }}
{{- end }}
{{- if or (and $ex $k.jwks) (and (not $ex) .Values.jwt.jwks) }}
{{- $files = append $files (dict "key" (ternary $k.jwks "jwks.json" (not (empty $ex))) "path" "jwks.json" "env" "TICKFAN_JWT_JWKS" "prefix" "") }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/*
Cross-field checks JSON Schema (draft-07) cannot express. Included by the
Deployment so `helm template`/`install` fail early with a clear message.
*/}}
{{- define "tickfan.validate" -}}
{{- $d := .Values.drain }}
{{- if le ($d.shutdownGraceSeconds | int) ($d.drainWindowSeconds | int) }}
{{- fail (printf "drain.shutdownGraceSeconds (%v) must exceed drain.drainWindowSeconds (%v): tickfan refuses to start otherwise" $d.shutdownGraceSeconds $d.drainWindowSeconds) }}
{{- end }}
{{- $pre := include "tickfan.preStopSeconds" . | int }}
{{- $tgp := include "tickfan.terminationGracePeriodSeconds" . | int }}
{{- $need := add $pre ($d.shutdownGraceSeconds | int) }}
{{- if lt $tgp (add $need 5) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStop (%d) + drain.shutdownGraceSeconds (%v) + 5s margin = %d, or Kubernetes SIGKILLs the pod before clients are drained (drain window %vs)" $tgp $pre $d.shutdownGraceSeconds (add $need 5) $d.drainWindowSeconds) }}
{{- end }}
{{- if and .Values.jwt.publicKey .Values.jwt.jwks }}
{{- fail "jwt.publicKey and jwt.jwks are mutually exclusive (tickfan accepts --jwt-public-key or --jwt-jwks, not both)" }}
{{- end }}
{{- if and .Values.jwt.existingSecret .Values.jwt.existingSecretKeys.publicKey .Values.jwt.existingSecretKeys.jwks }}
{{- fail "jwt.existingSecretKeys.publicKey and jwt.existingSecretKeys.jwks are mutually exclusive" }}
{{- end }}
{{- if and .Values.jwt.existingSecret (or .Values.jwt.secret .Values.jwt.publicKey .Values.jwt.jwks) }}
{{- fail "jwt.existingSecret is set: leave jwt.secret/publicKey/jwks empty (the chart creates no Secret then)" }}
{{- end }}
{{- if and .Values.jwt.existingSecret (not (or .Values.jwt.existingSecretKeys.secret .Values.jwt.existingSecretKeys.publicKey .Values.jwt.existingSecretKeys.jwks)) }}
{{- fail "jwt.existingSecret is set: name at least one key in jwt.existingSecretKeys (secret, publicKey or jwks)" }}
{{- end }}
{{- if and .Values.adminPort (eq (.Values.adminPort | int) (.Values.containerPort | int)) }}
{{- fail (printf "adminPort (%v) must differ from containerPort (%v)" .Values.adminPort .Values.containerPort) }}
{{- end }}
{{- $reserved := list "TICKFAN_LISTEN" "TICKFAN_ADMIN_LISTEN" "TICKFAN_BROKERS" "TICKFAN_TOPIC" "TICKFAN_DRAIN_WINDOW" "TICKFAN_SHUTDOWN_GRACE" "TICKFAN_TRUSTED_PROXIES" "TICKFAN_PAGE" "TICKFAN_JWT_SECRET" "TICKFAN_JWT_PUBLIC_KEY" "TICKFAN_JWT_JWKS" "TICKFAN_JWT_ISSUER" "TICKFAN_JWT_AUDIENCE" "TICKFAN_TRACE_ROOT_SAMPLE" "TICKFAN_WRITE_TIMEOUT" "TICKFAN_MAX_CONNECTIONS_PER_IP" "TICKFAN_AUTH_FAILURE_RATE_PER_IP" "TICKFAN_AUTH_FAILURE_BURST_PER_IP" "TICKFAN_MAX_UNKNOWN_SYMBOLS" "TICKFAN_MAX_SUBSCRIPTIONS" "TICKFAN_SYMBOL_RATE" "TICKFAN_SYMBOL_BURST" "TICKFAN_CLIENT_FRAME_RATE" "TICKFAN_CLIENT_BYTE_RATE" "TICKFAN_MAX_FRAGMENTS" "TICKFAN_MAX_HTTP_CONNECTIONS" "TICKFAN_HTTP_WRITE_TIMEOUT" "TICKFAN_FD_RESERVE" "TICKFAN_PACING_PATIENCE" }}
{{- range $key, $_ := .Values.config }}
{{- if has $key $reserved }}
{{- fail (printf "config.%s is managed by a dedicated value of this chart (see values.yaml); set that instead" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
