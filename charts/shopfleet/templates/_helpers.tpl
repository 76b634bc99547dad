{{/*
Shopfleet chart helpers.

Most helpers take a context dict:
  root       the top-level context ($)
  component  the role: a worker role, "edge", "payments-sandbox", "smtp-sink", "migrate", "topology", "operator"
  values     that role's values (workers.<role>, edge, …) where it has any
*/}}

{{/* The chart's name. */}}
{{- define "shopfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release name when it already holds the chart name; at most 63 characters. */}}
{{- define "shopfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* <fullname>-<component>: the fullname is shortened so that the component is always kept whole. */}}
{{- define "shopfleet.componentName" -}}
{{- $max := int (sub 62 (len .component)) -}}
{{- printf "%s-%s" (include "shopfleet.fullname" .root | trunc $max | trimSuffix "-") .component -}}
{{- end -}}

{{/* The worker roles, in the order of docs/security.md. */}}
{{- define "shopfleet.workerRoles" -}}
catalog inventory orders payments notifications search identity cart deadletters
{{- end -}}

{{/*
What each role reads from its Secret (required keys fail the pod when missing; optional ones may be
absent) and, for workers, the queue KEDA watches (`<role>.commands` where it exists, else the role's
first queue in topology/shopfleet.yaml) and any more it watches too (`alsoQueues`, a trigger each:
notifications gets its work as order events, and its commands queue carries every webhook call and
every email tried again). Use: include "shopfleet.roleTable" . | fromYaml
*/}}
{{- define "shopfleet.roleTable" -}}
catalog:
  queue: catalog.commands
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL]
  optional: []
inventory:
  queue: inventory.commands
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL]
  optional: []
orders:
  queue: orders.commands
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL]
  optional: []
payments:
  queue: payments.commands
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL, SHOPFLEET_PAYMENTS_API_KEY]
  optional: []
notifications:
  queue: notifications.order-events
  alsoQueues: [notifications.commands]
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL, SHOPFLEET_SMTP_URL]
  optional: [SHOPFLEET_WEBHOOK_SECRET]
search:
  queue: search.updates
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL]
  optional: []
identity:
  queue: identity.queries
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL, SHOPFLEET_JWT_SIGNING_KEY]
  optional: []
cart:
  queue: cart.queries
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL, SHOPFLEET_REDIS_URL]
  optional: []
deadletters:
  queue: shopfleet.dead-letters
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL]
  optional: []
edge:
  required: [SHOPFLEET_AMQP_URL, SHOPFLEET_REDIS_URL]
  optional: []
payments-sandbox:
  required: [SHOPFLEET_PAYMENTS_API_KEY]
  optional: []
{{- end -}}

{{/* The secret keys a role reads: {required: [...], optional: [...]} (the edge's public keys when not in its ConfigMap). */}}
{{- define "shopfleet.secretKeys" -}}
{{- $entry := index (include "shopfleet.roleTable" .root | fromYaml) .component -}}
{{- $required := $entry.required -}}
{{- if and (eq .component "edge") (not .root.Values.edge.jwtPublicKeys) -}}
{{- $required = append $required "SHOPFLEET_JWT_PUBLIC_KEYS" -}}
{{- end -}}
{{- dict "required" $required "optional" $entry.optional | toYaml -}}
{{- end -}}

{{/* Selector labels of a component. */}}
{{- define "shopfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shopfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The version label: the image tag, or the appVersion. */}}
{{- define "shopfleet.version" -}}
{{- default .Chart.AppVersion .Values.image.tag | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Every label of a component's resources. */}}
{{- define "shopfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "shopfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ include "shopfleet.version" .root | quote }}
app.kubernetes.io/part-of: shopfleet
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of the release as a whole (resources that belong to no one role). */}}
{{- define "shopfleet.releaseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "shopfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "shopfleet.version" . | quote }}
app.kubernetes.io/part-of: shopfleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of a pod: the component's labels and podLabels. */}}
{{- define "shopfleet.podLabels" -}}
{{ include "shopfleet.labels" . }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Shopfleet image. */}}
{{- define "shopfleet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets of a pod spec. */}}
{{- define "shopfleet.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The pod's securityContext: non-root uid 10001, RuntimeDefault seccomp. Takes the uid. */}}
{{- define "shopfleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A container's securityContext: read-only root, no privilege escalation, no capabilities. Takes the uid. */}}
{{- define "shopfleet.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Probes of a Shopfleet process on its ops port (9090): started, alive, ready. */}}
{{- define "shopfleet.opsProbes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: 2
  failureThreshold: 30
  timeoutSeconds: 2
livenessProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: ops
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* The writable /tmp every pod has (the root filesystem is read-only). */}}
{{- define "shopfleet.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
{{- define "shopfleet.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* nodeSelector, tolerations and affinity of a pod spec, from a values map. */}}
{{- define "shopfleet.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The name of the Secret a role reads: its existingSecret, or the one the chart makes. */}}
{{- define "shopfleet.secretName" -}}
{{- if .values.existingSecret -}}
{{- .values.existingSecret -}}
{{- else -}}
{{- include "shopfleet.componentName" . -}}
{{- end -}}
{{- end -}}

{{/* The SMTP sink's URL, inside the cluster. */}}
{{- define "shopfleet.smtpSinkURL" -}}
{{- printf "smtp://%s.%s.svc:%d" (include "shopfleet.componentName" (dict "root" . "component" "smtp-sink")) .Release.Namespace (int .Values.smtpSink.port) -}}
{{- end -}}

{{/* The payments sandbox's URL, inside the cluster. */}}
{{- define "shopfleet.paymentsSandboxURL" -}}
{{- printf "http://%s.%s.svc:12111" (include "shopfleet.componentName" (dict "root" . "component" "payments-sandbox")) .Release.Namespace -}}
{{- end -}}

{{/*
The data of the Secret the chart makes for a role (only non-empty values; the notifications worker
falls back to the SMTP sink when it is enabled, the payments sandbox to the payments worker's key).
A map, as YAML.
*/}}
{{- define "shopfleet.secretData" -}}
{{- $data := dict -}}
{{- range $key, $value := .values.secret -}}
{{- if $value -}}
{{- $_ := set $data $key $value -}}
{{- end -}}
{{- end -}}
{{- if and (eq .component "payments-sandbox") (not (hasKey $data "SHOPFLEET_PAYMENTS_API_KEY")) .root.Values.workers.payments.secret.SHOPFLEET_PAYMENTS_API_KEY -}}
{{- $_ := set $data "SHOPFLEET_PAYMENTS_API_KEY" .root.Values.workers.payments.secret.SHOPFLEET_PAYMENTS_API_KEY -}}
{{- end -}}
{{- if and (eq .component "notifications") .root.Values.smtpSink.enabled (not (hasKey $data "SHOPFLEET_SMTP_URL")) -}}
{{- $_ := set $data "SHOPFLEET_SMTP_URL" (include "shopfleet.smtpSinkURL" .root) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* The Secret the chart makes for a role, or nothing when the role names an existingSecret. */}}
{{- define "shopfleet.secret" -}}
{{- if not .values.existingSecret -}}
{{- $data := include "shopfleet.secretData" . | fromYaml -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "shopfleet.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "shopfleet.labels" . | nindent 4 }}
type: Opaque
{{- if $data }}
data:
  {{- range $key := keys $data | sortAlpha }}
  {{ $key }}: {{ index $data $key | toString | b64enc | quote }}
  {{- end }}
{{- else }}
data: {}
{{- end }}
{{- end -}}
{{- end -}}

{{/* checksum/secret of a role: the Secret the chart makes, or the name of the one it reads. */}}
{{- define "shopfleet.secretChecksum" -}}
{{- if .values.existingSecret -}}
{{- printf "existing:%s" .values.existingSecret | sha256sum -}}
{{- else -}}
{{- include "shopfleet.secret" . | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* env entries that read a role's secret keys from its Secret (secretKeyRef, never a literal). */}}
{{- define "shopfleet.secretEnv" -}}
{{- $keys := include "shopfleet.secretKeys" . | fromYaml -}}
{{- $name := include "shopfleet.secretName" . -}}
{{- range $keys.required }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $name }}
      key: {{ . }}
{{- end }}
{{- range $keys.optional }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $name }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end -}}

{{/*
The plain settings of a role (its ConfigMap's data): what every Shopfleet process needs in a pod,
the shared config, the role's own settings, then config.env and the role's env.
*/}}
{{- define "shopfleet.configData" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $data := dict
  "SHOPFLEET_BIND_ADDRESS" "0.0.0.0"
  "SHOPFLEET_HTTP_PORT" "9090"
  "SHOPFLEET_TOPOLOGY_FILE" "/usr/share/shopfleet/topology/shopfleet.yaml"
  "SHOPFLEET_ENV_FILE" "/dev/null"
  "SHOPFLEET_LOG_LEVEL" $root.Values.config.logLevel
  "SHOPFLEET_THREAD_SPIN_US" (toString $root.Values.config.threadSpinUs)
-}}
{{- if eq .component "edge" -}}
{{- $_ := set $data "SHOPFLEET_OPENAPI_FILE" "/usr/share/shopfleet/openapi.yaml" -}}
{{- $_ = set $data "SHOPFLEET_WEB_ROOT" "/usr/share/shopfleet/web" -}}
{{- $_ = set $data "SHOPFLEET_EDGE_PORT" "8080" -}}
{{- $_ = set $data "SHOPFLEET_EDGE_RATE_LIMIT" (toString $v.rateLimit) -}}
{{- $_ = set $data "SHOPFLEET_EDGE_REGISTRATIONS_PER_HOUR" (toString $v.registrationsPerHour) -}}
{{- $_ = set $data "SHOPFLEET_EDGE_QUERY_TIMEOUT" $v.queryTimeout -}}
{{- if $v.trustedProxies -}}
{{- $_ = set $data "SHOPFLEET_EDGE_TRUSTED_PROXIES" (join "," $v.trustedProxies) -}}
{{- end -}}
{{- if $v.jwtPublicKeys -}}
{{- $_ = set $data "SHOPFLEET_JWT_PUBLIC_KEYS" $v.jwtPublicKeys -}}
{{- end -}}
{{- with include "shopfleet.edgeManagementURL" $root -}}
{{- $_ = set $data "SHOPFLEET_EDGE_MANAGEMENT_URL" . -}}
{{- end -}}
{{- else if eq .component "payments-sandbox" -}}
{{- else -}}
{{- $_ := set $data "SHOPFLEET_WORKER_PREFETCH" (toString $v.prefetch) -}}
{{- $_ = set $data "SHOPFLEET_WORKER_CONCURRENCY" (toString $v.concurrency) -}}
{{- $_ = set $data "SHOPFLEET_WORKER_BATCH" (toString $v.batch) -}}
{{- if eq .component "orders" -}}
{{- $_ = set $data "SHOPFLEET_CHECKOUT_RESEND_AFTER" $v.checkout.resendAfter -}}
{{- $_ = set $data "SHOPFLEET_CHECKOUT_RESEND_LIMIT" $v.checkout.resendLimit -}}
{{- $_ = set $data "SHOPFLEET_CHECKOUT_RESERVE_TIMEOUT" $v.checkout.reserveTimeout -}}
{{- $_ = set $data "SHOPFLEET_CHECKOUT_PAYMENT_TIMEOUT" $v.checkout.paymentTimeout -}}
{{- $_ = set $data "SHOPFLEET_CHECKOUT_STEP_TIMEOUT" $v.checkout.stepTimeout -}}
{{- else if eq .component "inventory" -}}
{{- $_ = set $data "SHOPFLEET_CHECKOUT_RESERVATION_TTL" $v.reservationTtl -}}
{{- else if eq .component "payments" -}}
{{- if $v.gatewayUrl -}}
{{- $_ = set $data "SHOPFLEET_PAYMENTS_URL" $v.gatewayUrl -}}
{{- else if $root.Values.paymentsSandbox.enabled -}}
{{- $_ = set $data "SHOPFLEET_PAYMENTS_URL" (include "shopfleet.paymentsSandboxURL" $root) -}}
{{- end -}}
{{- else if eq .component "notifications" -}}
{{- $_ = set $data "SHOPFLEET_MAIL_FROM" $v.mailFrom -}}
{{- if $v.webhookUrl -}}
{{- $_ = set $data "SHOPFLEET_WEBHOOK_URL" $v.webhookUrl -}}
{{- end -}}
{{- else if eq .component "identity" -}}
{{- $_ = set $data "SHOPFLEET_ACCESS_TOKEN_TTL" $v.accessTokenTtl -}}
{{- else if eq .component "cart" -}}
{{- $_ = set $data "SHOPFLEET_CART_TTL" $v.cartTtl -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := $root.Values.config.env -}}
{{- $_ := set $data $key (toString $value) -}}
{{- end -}}
{{- range $key, $value := $v.env -}}
{{- $_ := set $data $key (toString $value) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* The ConfigMap of a role. */}}
{{- define "shopfleet.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "shopfleet.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "shopfleet.labels" . | nindent 4 }}
data:
  {{- $data := include "shopfleet.configData" . | fromYaml }}
  {{- range $key := keys $data | sortAlpha }}
  {{ $key }}: {{ index $data $key | toString | quote }}
  {{- end }}
{{- end -}}

{{/* Pod annotations of a role: checksums of its ConfigMap and Secret (a change rolls the pods), podAnnotations. */}}
{{- define "shopfleet.podAnnotations" -}}
checksum/config: {{ include "shopfleet.configmap" . | sha256sum }}
checksum/secret: {{ include "shopfleet.secretChecksum" . }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Whether KEDA's RabbitMQ TriggerAuthentication is needed: "true" or "". */}}
{{- define "shopfleet.kedaRabbitmqUsed" -}}
{{- range $role := include "shopfleet.workerRoles" $ | splitList " " -}}
{{- $w := index $.Values.workers $role -}}
{{- if and $w.enabled (eq $w.autoscaling.mode "keda") -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret KEDA reads the management URL from. */}}
{{- define "shopfleet.kedaSecretName" -}}
{{- if .Values.keda.managementSecret.name -}}
{{- .Values.keda.managementSecret.name -}}
{{- else -}}
{{- include "shopfleet.componentName" (dict "root" . "component" "keda-rabbitmq") -}}
{{- end -}}
{{- end -}}

{{/*
The RabbitMQ management API the edge's console reads (SHOPFLEET_EDGE_MANAGEMENT_URL), never with a
user or password (the edge signs in as shopfleet-edge): edge.managementUrl, else the operator's
management URL from operator.secret without its user and password, else
http://<rabbitmq.host>:<rabbitmq.managementPort>, else empty (no fleet view).
*/}}
{{- define "shopfleet.edgeManagementURL" -}}
{{- $operatorURL := .Values.operator.secret.SHOPFLEET_AMQP_MANAGEMENT_URL -}}
{{- if .Values.edge.managementUrl -}}
{{- .Values.edge.managementUrl -}}
{{- else if and (not .Values.operator.existingSecret) $operatorURL -}}
{{- $url := urlParse $operatorURL -}}
{{- printf "%s://%s" $url.scheme $url.host -}}
{{- else if .Values.rabbitmq.host -}}
{{- printf "http://%s:%d" .Values.rabbitmq.host (int .Values.rabbitmq.managementPort) -}}
{{- end -}}
{{- end -}}

{{/* The operator Secret's name. */}}
{{- define "shopfleet.operatorSecretName" -}}
{{- if .Values.operator.existingSecret -}}
{{- .Values.operator.existingSecret -}}
{{- else -}}
{{- include "shopfleet.componentName" (dict "root" . "component" "operator") -}}
{{- end -}}
{{- end -}}

{{/* A list of egress targets ({cidr, except, namespaceSelector, podSelector, ports}) as NetworkPolicy egress rules. */}}
{{- define "shopfleet.egressRules" -}}
{{- range . }}
- to:
    {{- if .cidr }}
    - ipBlock:
        cidr: {{ .cidr }}
        {{- with .except }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- else if hasKey . "namespaceSelector" }}
    - namespaceSelector: {{- toYaml .namespaceSelector | nindent 8 }}
      {{- if hasKey . "podSelector" }}
      podSelector: {{- toYaml .podSelector | nindent 8 }}
      {{- end }}
    {{- else }}
    - podSelector: {{- toYaml .podSelector | nindent 8 }}
    {{- end }}
  {{- with .ports }}
  ports:
    {{- range . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
