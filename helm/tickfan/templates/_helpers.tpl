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
Kafka secret files to mount: a list of volumes as JSON, each
{name, mountPath, sources: [{secret, items: [{key, path, env}]}]}.
key = key in the Secret, path = file name under mountPath, env = the
TICKFAN_* variable that gets the file's path (put in the ConfigMap). The
Secrets are always existing ones (the chart creates none for Kafka). The TLS
volume projects two Secrets when the CA is in tls.caSecret (Strimzi).
*/}}
{{- define "tickfan.kafkaVolumes" -}}
{{- $k := .Values.kafka }}
{{- $vols := list }}
{{- $caSecret := $k.tls.caSecret | default $k.tls.existingSecret }}
{{- $caItems := list }}
{{- if and $caSecret $k.tls.caKey }}
{{- $caItems = list (dict "key" $k.tls.caKey "path" "ca.crt" "env" "TICKFAN_KAFKA_CA") }}
{{- end }}
{{- $userItems := list }}
{{- if and $k.tls.existingSecret $k.tls.certKey $k.tls.keyKey }}
{{- $userItems = list (dict "key" $k.tls.certKey "path" "tls.crt" "env" "TICKFAN_KAFKA_CERT") (dict "key" $k.tls.keyKey "path" "tls.key" "env" "TICKFAN_KAFKA_KEY") }}
{{- with $k.tls.keyPasswordKey }}
{{- $userItems = append $userItems (dict "key" . "path" "key-password" "env" "TICKFAN_KAFKA_KEY_PASSWORD_FILE") }}
{{- end }}
{{- end }}
{{- if and $caItems $userItems (eq $caSecret $k.tls.existingSecret) }}
{{- $userItems = concat $caItems $userItems }}
{{- $caItems = list }}
{{- end }}
{{- $tls := list }}
{{- if $caItems }}
{{- $tls = append $tls (dict "secret" $caSecret "items" $caItems) }}
{{- end }}
{{- if $userItems }}
{{- $tls = append $tls (dict "secret" $k.tls.existingSecret "items" $userItems) }}
{{- end }}
{{- if $tls }}
{{- $vols = append $vols (dict "name" "kafka-tls" "mountPath" "/etc/tickfan/kafka-tls" "sources" $tls) }}
{{- end }}
{{- if and (has $k.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) $k.sasl.existingSecret }}
{{- $vols = append $vols (dict "name" "kafka-sasl" "mountPath" "/etc/tickfan/kafka-sasl" "sources" (list (dict "secret" $k.sasl.existingSecret "items" (list (dict "key" $k.sasl.passwordKey "path" "password" "env" "TICKFAN_KAFKA_SASL_PASSWORD_FILE"))))) }}
{{- end }}
{{- if and (eq $k.sasl.mechanism "OAUTHBEARER") $k.oauth.existingSecret }}
{{- $vols = append $vols (dict "name" "kafka-oauth" "mountPath" "/etc/tickfan/kafka-oauth" "sources" (list (dict "secret" $k.oauth.existingSecret "items" (list (dict "key" $k.oauth.clientSecretKey "path" "client-secret" "env" "TICKFAN_KAFKA_OAUTH_CLIENT_SECRET_FILE"))))) }}
{{- end }}
{{- toJson $vols }}
{{- end }}

{{/*
kafka.options as TICKFAN_KAFKA: key=value pairs joined with commas, keys
sorted; whole numbers printed as integers (not 1e+06).
*/}}
{{- define "tickfan.kafkaOptions" -}}
{{- $pairs := list }}
{{- range $key, $v := .Values.kafka.options }}
{{- $s := toString $v }}
{{- if and (kindIs "float64" $v) (eq $v (float64 (int64 $v))) }}
{{- $s = int64 $v | toString }}
{{- end }}
{{- $pairs = append $pairs (printf "%s=%s" $key $s) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
Kafka checks (security protocol, SASL, TLS, options); the binary makes the
same ones at startup, these fail at render time instead.
*/}}
{{- define "tickfan.validateKafka" -}}
{{- $k := .Values.kafka }}
{{- $proto := $k.securityProtocol }}
{{- $sasl := hasPrefix "SASL_" $proto }}
{{- $tlsProto := has $proto (list "SSL" "SASL_SSL") }}
{{- $mech := $k.sasl.mechanism }}
{{- if and $sasl (not $mech) }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)" $proto) }}
{{- end }}
{{- if and $mech (not $sasl) }}
{{- fail (printf "kafka.sasl.mechanism is %s but kafka.securityProtocol is %s: SASL needs SASL_SSL (or SASL_PLAINTEXT)" $mech $proto) }}
{{- end }}
{{- if has $mech (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") }}
{{- $missing := list }}
{{- if not $k.sasl.username }}{{ $missing = append $missing "kafka.sasl.username" }}{{ end }}
{{- if not $k.sasl.existingSecret }}{{ $missing = append $missing "kafka.sasl.existingSecret (a Secret whose key kafka.sasl.passwordKey holds the password)" }}{{ end }}
{{- if $missing }}
{{- fail (printf "kafka.sasl.mechanism %s needs %s" $mech (join " and " $missing)) }}
{{- end }}
{{- else if or $k.sasl.username $k.sasl.existingSecret }}
{{- fail (printf "kafka.sasl.username and kafka.sasl.existingSecret are for kafka.sasl.mechanism PLAIN or SCRAM-SHA-256/512 (it is %s)" (ternary $mech "unset" (not (empty $mech)))) }}
{{- end }}
{{- if eq $mech "OAUTHBEARER" }}
{{- $missing := list }}
{{- if not $k.oauth.tokenEndpoint }}{{ $missing = append $missing "kafka.oauth.tokenEndpoint" }}{{ end }}
{{- if not $k.oauth.clientId }}{{ $missing = append $missing "kafka.oauth.clientId" }}{{ end }}
{{- if not $k.oauth.existingSecret }}{{ $missing = append $missing "kafka.oauth.existingSecret (a Secret whose key kafka.oauth.clientSecretKey holds the client secret)" }}{{ end }}
{{- if $missing }}
{{- fail (printf "kafka.sasl.mechanism OAUTHBEARER needs %s" (join " and " $missing)) }}
{{- end }}
{{- else if or $k.oauth.tokenEndpoint $k.oauth.clientId $k.oauth.existingSecret $k.oauth.scope }}
{{- fail (printf "kafka.oauth.* is for kafka.sasl.mechanism OAUTHBEARER (it is %s)" (ternary $mech "unset" (not (empty $mech)))) }}
{{- end }}
{{- $t := $k.tls }}
{{- if and $t.certKey (not $t.keyKey) }}
{{- fail "kafka.tls.certKey is set without kafka.tls.keyKey: mutual TLS needs both the client certificate and its key" }}
{{- end }}
{{- if and $t.keyKey (not $t.certKey) }}
{{- fail "kafka.tls.keyKey is set without kafka.tls.certKey: mutual TLS needs both the client certificate and its key" }}
{{- end }}
{{- if and $t.keyPasswordKey (not $t.keyKey) }}
{{- fail "kafka.tls.keyPasswordKey is the passphrase of the client key: set kafka.tls.certKey and kafka.tls.keyKey too" }}
{{- end }}
{{- if and (or $t.certKey $t.keyKey) (not $t.existingSecret) }}
{{- fail "kafka.tls.certKey/keyKey name keys of kafka.tls.existingSecret: set kafka.tls.existingSecret" }}
{{- end }}
{{- if and $t.caKey (ne $t.caKey "ca.crt") (not (or $t.caSecret $t.existingSecret)) }}
{{- fail (printf "kafka.tls.caKey (%s) names a key of kafka.tls.caSecret or kafka.tls.existingSecret: set one of them (or leave caKey at ca.crt or \"\" for the system CAs)" $t.caKey) }}
{{- end }}
{{- if and $t.caSecret (not $t.caKey) }}
{{- fail "kafka.tls.caSecret is set but kafka.tls.caKey is empty: name the key holding the CA (e.g. ca.crt)" }}
{{- end }}
{{- if and (or $t.existingSecret $t.caSecret) (not $tlsProto) }}
{{- fail (printf "kafka.tls.existingSecret/caSecret are set but kafka.securityProtocol is %s: TLS files are used only with SSL or SASL_SSL" $proto) }}
{{- end }}
{{- $secretKeys := list "sasl.password" "ssl.key.password" "sasl.oauthbearer.client.secret" "ssl.keystore.password" "ssl.key.pem" "ssl.certificate.pem" "sasl.oauthbearer.config" "ssl_key" }}
{{- $chartKeys := list "bootstrap.servers" "metadata.broker.list" "security.protocol" "sasl.mechanism" "sasl.mechanisms" "sasl.username" "ssl.ca.location" "ssl.ca.pem" "ssl.certificate.location" "ssl.key.location" }}
{{- range $key, $_ := $k.options }}
{{- if or (has $key $secretKeys) (contains "password" $key) (contains "secret" $key) (contains "jaas" $key) }}
{{- fail (printf "kafka.options.%s is a secret: it would be stored in the ConfigMap (and tickfan refuses it in TICKFAN_KAFKA); use kafka.sasl/tls/oauth with an existingSecret" $key) }}
{{- end }}
{{- if or (has $key $chartKeys) (hasPrefix "sasl.oauthbearer." $key) }}
{{- fail (printf "kafka.options.%s is set by the chart from kafka.brokers/securityProtocol/sasl/tls/oauth: set that value instead" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Schema Registry secret files to mount: a list of volumes as JSON, in the
shape of tickfan.kafkaVolumes ({name, mountPath, sources: [{secret, items:
[{key, path, env}]}]}). The Secrets are always existing ones (the chart
creates none for the registry); only the files' paths go in the ConfigMap.
*/}}
{{- define "tickfan.schemaRegistryVolumes" -}}
{{- $r := .Values.schemaRegistry }}
{{- $vols := list }}
{{- if and $r.url $r.username $r.existingSecret }}
{{- $vols = append $vols (dict "name" "schema-registry" "mountPath" "/etc/tickfan/schema-registry" "sources" (list (dict "secret" $r.existingSecret "items" (list (dict "key" $r.passwordKey "path" "password" "env" "TICKFAN_SCHEMA_REGISTRY_PASSWORD_FILE"))))) }}
{{- end }}
{{- if and $r.url $r.caSecret $r.caKey }}
{{- $vols = append $vols (dict "name" "schema-registry-ca" "mountPath" "/etc/tickfan/schema-registry-ca" "sources" (list (dict "secret" $r.caSecret "items" (list (dict "key" $r.caKey "path" "ca.crt" "env" "TICKFAN_SCHEMA_REGISTRY_CA_FILE"))))) }}
{{- end }}
{{- toJson $vols }}
{{- end }}

{{/*
Every Secret-backed volume but the JWT one (Kafka, then Schema Registry), as JSON.
*/}}
{{- define "tickfan.secretFileVolumes" -}}
{{- toJson (concat (include "tickfan.kafkaVolumes" . | fromJsonArray) (include "tickfan.schemaRegistryVolumes" . | fromJsonArray)) }}
{{- end }}

{{/*
Schema Registry and mapping checks; the binary makes the same ones at
startup (or would hold every format=avro partition), these fail at render
time instead.
*/}}
{{- define "tickfan.validateSchemaRegistry" -}}
{{- $r := .Values.schemaRegistry }}
{{- if and $r.url (not (or (hasPrefix "http://" $r.url) (hasPrefix "https://" $r.url))) }}
{{- fail (printf "schemaRegistry.url (%s) must be an http:// or https:// URL, e.g. https://registry:8081 or http://apicurio:8080/apis/ccompat/v7" $r.url) }}
{{- end }}
{{- if and $r.username (not $r.existingSecret) }}
{{- fail "schemaRegistry.username is set without schemaRegistry.existingSecret: basic auth needs a Secret whose key schemaRegistry.passwordKey holds the password (passwords never go in values)" }}
{{- end }}
{{- if and $r.existingSecret (not $r.username) }}
{{- fail "schemaRegistry.existingSecret is set without schemaRegistry.username: the password is for basic auth, set the user too" }}
{{- end }}
{{- if not $r.url }}
{{- $set := list }}
{{- range $key := list "username" "existingSecret" "caSecret" "timeout" }}
{{- if index $r $key }}{{ $set = append $set (printf "schemaRegistry.%s" $key) }}{{ end }}
{{- end }}
{{- if $set }}
{{- fail (printf "%s set but schemaRegistry.url is empty: set the registry's URL" (join ", " $set)) }}
{{- end }}
{{- end }}
{{- if and $r.caSecret (not $r.caKey) }}
{{- fail "schemaRegistry.caSecret is set but schemaRegistry.caKey is empty: name the key holding the CA (e.g. ca.crt)" }}
{{- end }}
{{- if and $r.caSecret (hasPrefix "http://" $r.url) }}
{{- fail (printf "schemaRegistry.caSecret is set but schemaRegistry.url (%s) is http://: the CA is used only with https://" $r.url) }}
{{- end }}
{{- /* As tickfan splits TICKFAN_TOPIC: on commas, untrimmed; a mapping's topic is trimmed. */}}
{{- $topics := splitList "," .Values.kafka.topic }}
{{- $seen := list }}
{{- range $m := .Values.mappings }}
{{- if not (contains ":" $m) }}
{{- fail (printf "mappings: %q is not TOPIC:key=value,... (no ':'), e.g. quotes:format=avro,symbol=instrument.ticker,price=px (docs/mapping.md)" $m) }}
{{- end }}
{{- if contains ";" $m }}
{{- fail (printf "mappings: %q contains ';', which separates mappings in TICKFAN_MAPPING: give each mapping as its own list item" $m) }}
{{- end }}
{{- $topic := trim (first (splitList ":" $m)) }}
{{- if not (has $topic $topics) }}
{{- fail (printf "mappings: %q maps topic %q, which is not one of kafka.topic (%s): tickfan refuses a mapping of a topic it does not read" $m $topic $.Values.kafka.topic) }}
{{- end }}
{{- if has $topic $seen }}
{{- fail (printf "mappings: topic %q is mapped twice" $topic) }}
{{- end }}
{{- $seen = append $seen $topic }}
{{- if and (regexMatch "(^|,)\\s*format\\s*=\\s*avro\\s*(,|$)" (regexReplaceAll "^[^:]*:" $m "")) (not $r.url) (not (regexMatch "(?m)^\\s*schema-registry\\s*=" $.Values.configFile)) }}
{{- fail (printf "mappings: %q is format=avro, which needs a Schema Registry: set schemaRegistry.url" $m) }}
{{- end }}
{{- end }}
{{- if and .Values.mappings (regexMatch "(?m)^\\s*(\\[\\s*mapping\\s*\\.|mapping\\s*=)" .Values.configFile) }}
{{- fail "mappings and configFile both give mappings: TICKFAN_MAPPING (from mappings) would replace the file's [mapping.TOPIC] tables; put them all in one place" }}
{{- end }}
{{- end }}

{{/*
The edge's environment, as the ConfigMap carries it (a YAML map). Also read
by tickfan.validate, which refuses a configFile setting that one of these
variables would silently override.
*/}}
{{- define "tickfan.env" -}}
TICKFAN_LISTEN: {{ printf "0.0.0.0:%d" (.Values.containerPort | int) | quote }}
{{- if .Values.adminPort }}
TICKFAN_ADMIN_LISTEN: {{ printf "0.0.0.0:%d" (.Values.adminPort | int) | quote }}
{{- end }}
TICKFAN_BROKERS: {{ .Values.kafka.brokers | quote }}
TICKFAN_TOPIC: {{ .Values.kafka.topic | quote }}
{{- if .Values.configFile }}
TICKFAN_CONFIG: "/etc/tickfan/config/tickfan.toml"
{{- end }}
{{- with .Values.kafka }}
TICKFAN_KAFKA_SECURITY_PROTOCOL: {{ .securityProtocol | quote }}
{{- with .sasl.mechanism }}
TICKFAN_KAFKA_SASL_MECHANISM: {{ . | quote }}
{{- end }}
{{- if ne .sasl.mechanism "OAUTHBEARER" }}
{{- with .sasl.username }}
TICKFAN_KAFKA_SASL_USERNAME: {{ . | quote }}
{{- end }}
{{- else }}
TICKFAN_KAFKA_OAUTH_TOKEN_ENDPOINT: {{ .oauth.tokenEndpoint | quote }}
TICKFAN_KAFKA_OAUTH_CLIENT_ID: {{ .oauth.clientId | quote }}
{{- with .oauth.scope }}
TICKFAN_KAFKA_OAUTH_SCOPE: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Paths of the mounted Kafka secret files only: passwords and keys stay in their Secrets. */}}
{{- range (include "tickfan.kafkaVolumes" . | fromJsonArray) }}
{{- $dir := .mountPath }}
{{- range .sources }}
{{- range .items }}
{{ .env }}: {{ printf "%s/%s" $dir .path | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.kafka.options }}
TICKFAN_KAFKA: {{ include "tickfan.kafkaOptions" $ | quote }}
{{- end }}
{{- with .Values.schemaRegistry }}
{{- if .url }}
TICKFAN_SCHEMA_REGISTRY: {{ .url | quote }}
{{- with .username }}
TICKFAN_SCHEMA_REGISTRY_USER: {{ . | quote }}
{{- end }}
{{- with .timeout }}
TICKFAN_SCHEMA_REGISTRY_TIMEOUT: {{ . | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Paths of the mounted registry password and CA only: the password stays in its Secret. */}}
{{- range (include "tickfan.schemaRegistryVolumes" . | fromJsonArray) }}
{{- $dir := .mountPath }}
{{- range .sources }}
{{- range .items }}
{{ .env }}: {{ printf "%s/%s" $dir .path | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.mappings }}
TICKFAN_MAPPING: {{ join ";" . | quote }}
{{- end }}
TICKFAN_DRAIN_WINDOW: {{ printf "%ds" (.Values.drain.drainWindowSeconds | int) | quote }}
TICKFAN_SHUTDOWN_GRACE: {{ printf "%ds" (.Values.drain.shutdownGraceSeconds | int) | quote }}
{{- with .Values.trustedProxies }}
TICKFAN_TRUSTED_PROXIES: {{ join "," . | quote }}
{{- end }}
{{- if .Values.page }}
TICKFAN_PAGE: "true"
{{- end }}
{{- if .Values.permessageDeflate.enabled }}
TICKFAN_PERMESSAGE_DEFLATE: "true"
TICKFAN_DEFLATE_MIN_BYTES: {{ .Values.permessageDeflate.minBytes | int64 | toString | quote }}
{{- end }}
{{- with .Values.jwt.issuer }}
TICKFAN_JWT_ISSUER: {{ . | quote }}
{{- end }}
{{- with .Values.jwt.audience }}
TICKFAN_JWT_AUDIENCE: {{ . | quote }}
{{- end }}
{{- /* Paths of mounted key files only: the key material stays in the Secret. */}}
{{- range (include "tickfan.jwtFiles" . | fromJsonArray) }}
{{ .env }}: {{ printf "%s%s/%s" .prefix $.Values.jwt.mountPath .path | quote }}
{{- end }}
{{- with .Values.tracing }}
{{- if .otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .otlpEndpoint | quote }}
OTEL_SERVICE_NAME: {{ default "tickfan-edge" .serviceName | quote }}
TICKFAN_TRACE_ROOT_SAMPLE: {{ .rootSample | toString | quote }}
{{- end }}
{{- end }}
{{- /* int64: Helm holds numbers as float64, and toString would give 1e+06 for 1000000. */}}
{{- with .Values.limits }}
TICKFAN_WRITE_TIMEOUT: {{ .writeTimeout | toString | quote }}
TICKFAN_MAX_CONNECTIONS_PER_IP: {{ .maxConnectionsPerIp | int64 | toString | quote }}
TICKFAN_AUTH_FAILURE_RATE_PER_IP: {{ .authFailureRatePerIp | int64 | toString | quote }}
TICKFAN_AUTH_FAILURE_BURST_PER_IP: {{ .authFailureBurstPerIp | int64 | toString | quote }}
TICKFAN_MAX_UNKNOWN_SYMBOLS: {{ .maxUnknownSymbols | int64 | toString | quote }}
TICKFAN_MAX_SUBSCRIPTIONS: {{ .maxSubscriptions | int64 | toString | quote }}
TICKFAN_SYMBOL_RATE: {{ .symbolRate | int64 | toString | quote }}
TICKFAN_SYMBOL_BURST: {{ .symbolBurst | int64 | toString | quote }}
TICKFAN_CLIENT_FRAME_RATE: {{ .clientFrameRate | int64 | toString | quote }}
TICKFAN_CLIENT_BYTE_RATE: {{ .clientByteRate | int64 | toString | quote }}
TICKFAN_MAX_FRAGMENTS: {{ .maxFragments | int64 | toString | quote }}
TICKFAN_MAX_HTTP_CONNECTIONS: {{ .maxHttpConnections | int64 | toString | quote }}
TICKFAN_HTTP_WRITE_TIMEOUT: {{ .httpWriteTimeout | toString | quote }}
TICKFAN_FD_RESERVE: {{ .fdReserve | int64 | toString | quote }}
TICKFAN_PACING_PATIENCE: {{ .pacingPatience | toString | quote }}
{{- end }}
{{- with .Values.resume }}
TICKFAN_RESUME_MEMORY: {{ .memoryBytes | int64 | toString | quote }}
TICKFAN_RESUME_WINDOW: {{ .window | toString | quote }}
TICKFAN_RESUME_MAX_TICKS: {{ .maxTicks | int64 | toString | quote }}
{{- end }}
{{- with .Values.directory }}
TICKFAN_DIRECTORY_INTERVAL: {{ .interval | toString | quote }}
TICKFAN_DIRECTORY_SAMPLE: {{ .sample | int64 | toString | quote }}
TICKFAN_DIRECTORY_MAX: {{ .max | int64 | toString | quote }}
{{- end }}
{{- range $key, $value := .Values.config }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
Cross-field checks JSON Schema (draft-07) cannot express. Included by the
Deployment so `helm template`/`install` fail early with a clear message.
*/}}
{{- define "tickfan.validate" -}}
{{- include "tickfan.validateKafka" . }}
{{- include "tickfan.validateSchemaRegistry" . }}
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
{{- $reserved := list "TICKFAN_CONFIG" "TICKFAN_LISTEN" "TICKFAN_ADMIN_LISTEN" "TICKFAN_BROKERS" "TICKFAN_TOPIC" "TICKFAN_DRAIN_WINDOW" "TICKFAN_SHUTDOWN_GRACE" "TICKFAN_TRUSTED_PROXIES" "TICKFAN_PAGE" "TICKFAN_PERMESSAGE_DEFLATE" "TICKFAN_DEFLATE_MIN_BYTES" "TICKFAN_RESUME_MEMORY" "TICKFAN_RESUME_WINDOW" "TICKFAN_RESUME_MAX_TICKS" "TICKFAN_DIRECTORY_INTERVAL" "TICKFAN_DIRECTORY_SAMPLE" "TICKFAN_DIRECTORY_MAX" "TICKFAN_JWT_SECRET" "TICKFAN_JWT_PUBLIC_KEY" "TICKFAN_JWT_JWKS" "TICKFAN_JWT_ISSUER" "TICKFAN_JWT_AUDIENCE" "TICKFAN_TRACE_ROOT_SAMPLE" "TICKFAN_WRITE_TIMEOUT" "TICKFAN_MAX_CONNECTIONS_PER_IP" "TICKFAN_AUTH_FAILURE_RATE_PER_IP" "TICKFAN_AUTH_FAILURE_BURST_PER_IP" "TICKFAN_MAX_UNKNOWN_SYMBOLS" "TICKFAN_MAX_SUBSCRIPTIONS" "TICKFAN_SYMBOL_RATE" "TICKFAN_SYMBOL_BURST" "TICKFAN_CLIENT_FRAME_RATE" "TICKFAN_CLIENT_BYTE_RATE" "TICKFAN_MAX_FRAGMENTS" "TICKFAN_MAX_HTTP_CONNECTIONS" "TICKFAN_HTTP_WRITE_TIMEOUT" "TICKFAN_FD_RESERVE" "TICKFAN_PACING_PATIENCE" "TICKFAN_KAFKA" "TICKFAN_KAFKA_SECURITY_PROTOCOL" "TICKFAN_KAFKA_SASL_MECHANISM" "TICKFAN_KAFKA_SASL_USERNAME" "TICKFAN_KAFKA_SASL_PASSWORD" "TICKFAN_KAFKA_SASL_PASSWORD_FILE" "TICKFAN_KAFKA_CA" "TICKFAN_KAFKA_CERT" "TICKFAN_KAFKA_KEY" "TICKFAN_KAFKA_KEY_PASSWORD" "TICKFAN_KAFKA_KEY_PASSWORD_FILE" "TICKFAN_KAFKA_OAUTH_TOKEN_ENDPOINT" "TICKFAN_KAFKA_OAUTH_CLIENT_ID" "TICKFAN_KAFKA_OAUTH_CLIENT_SECRET" "TICKFAN_KAFKA_OAUTH_CLIENT_SECRET_FILE" "TICKFAN_KAFKA_OAUTH_SCOPE" "TICKFAN_SCHEMA_REGISTRY" "TICKFAN_SCHEMA_REGISTRY_USER" "TICKFAN_SCHEMA_REGISTRY_PASSWORD" "TICKFAN_SCHEMA_REGISTRY_PASSWORD_FILE" "TICKFAN_SCHEMA_REGISTRY_CA_FILE" "TICKFAN_SCHEMA_REGISTRY_TIMEOUT" "TICKFAN_MAPPING" }}
{{- range $key, $_ := .Values.config }}
{{- if and (hasPrefix "TICKFAN_KAFKA" $key) (has $key $reserved) }}
{{- fail (printf "config.%s is managed by the chart's kafka.* values (kafka.securityProtocol, sasl, tls, oauth; other librdkafka settings in kafka.options; secrets from existing Secrets only); set those instead" $key) }}
{{- else if and (or (hasPrefix "TICKFAN_SCHEMA_REGISTRY" $key) (eq $key "TICKFAN_MAPPING")) (has $key $reserved) }}
{{- fail (printf "config.%s is managed by the chart's schemaRegistry.* and mappings values (the password from schemaRegistry.existingSecret only); set those instead" $key) }}
{{- else if has $key $reserved }}
{{- fail (printf "config.%s is managed by a dedicated value of this chart (see values.yaml); set that instead" $key) }}
{{- end }}
{{- end }}
{{- if .Values.configFile }}
{{- range $key, $_ := include "tickfan.env" . | fromYaml }}
{{- $flag := $key | trimPrefix "TICKFAN_" | lower | replace "_" "-" }}
{{- if and (hasPrefix "TICKFAN_" $key) (regexMatch (printf "(?m)^\\s*%s\\s*=" $flag) $.Values.configFile) }}
{{- fail (printf "configFile sets %s, but the chart passes %s, an environment variable, which wins over the file: set it through the chart's value for it (see values.yaml) or in config, not in configFile" $flag $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
