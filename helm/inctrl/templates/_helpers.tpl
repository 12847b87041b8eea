{{/* Chart name, truncated to the 63 characters Kubernetes allows in a name. */}}
{{- define "inctrl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's resources. Kept to 40 characters: KubeRay derives longer names
(<name>-raycluster-xxxxx-head-svc) from the RayService's. */}}
{{- define "inctrl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "inctrl.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "inctrl.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "inctrl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inctrl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "inctrl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "inctrl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "inctrl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "inctrl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "inctrl.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of KubeRay's Serve service for this RayService. */}}
{{- define "inctrl.serveServiceName" -}}
{{- printf "%s-serve-svc" (include "inctrl.fullname" .) -}}
{{- end -}}

{{/* S3 credentials of one component (dict "root" $ "component" "serve" or "consumer"): its own Secret
(s3.<component>.existingSecret, with the rights that component needs) or the shared s3.existingSecret. */}}
{{- define "inctrl.s3ComponentCredentialsEnv" -}}
{{- $own := (get .root.Values.s3 .component | default dict).existingSecret | default "" -}}
{{- if $own -}}
{{- include "inctrl.s3SecretEnv" (dict "secret" $own "values" .root.Values.s3) -}}
{{- else -}}
{{- include "inctrl.s3CredentialsEnv" .root -}}
{{- end -}}
{{- end -}}

{{- define "inctrl.s3SecretEnv" -}}
- name: INCTRL_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .values.accessKeyKey }}
- name: INCTRL_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .values.secretKeyKey }}
{{- end -}}

{{/* S3 credentials by reference to an existing Secret; values never hold them. */}}
{{- define "inctrl.s3CredentialsEnv" -}}
{{- $secret := required "s3.existingSecret is required: the name of a Secret holding the S3 access key and secret key" .Values.s3.existingSecret -}}
- name: INCTRL_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.s3.accessKeyKey }}
- name: INCTRL_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.s3.secretKeyKey }}
{{- end -}}

{{/* API tokens of the Serve ingress (INCTRL_API_TOKENS, services/auth.py): only the Ray pods read them. */}}
{{- define "inctrl.apiTokensEnv" -}}
- name: INCTRL_API_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ required "auth.apiTokens.existingSecret is required: the name of a Secret holding INCTRL_API_TOKENS (the ingress refuses to start without tokens)" .Values.auth.apiTokens.existingSecret }}
      key: {{ .Values.auth.apiTokens.key }}
{{- end -}}

{{/* The consumer's own `inspect` token for the ingress (INCTRL_SERVE_TOKEN). */}}
{{- define "inctrl.serveTokenEnv" -}}
- name: INCTRL_SERVE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ required "auth.consumerToken.existingSecret is required: the name of a Secret holding the consumer's inspect token" .Values.auth.consumerToken.existingSecret }}
      key: {{ .Values.auth.consumerToken.key }}
{{- end -}}

{{/* Kafka SASL credentials by reference (for SASL_* protocols). */}}
{{- define "inctrl.kafkaCredentialsEnv" -}}
{{- $secret := required "kafka.sasl.existingSecret is required when kafka.securityProtocol is SASL_*: the name of a Secret holding the SASL username and password" .Values.kafka.sasl.existingSecret -}}
- name: INCTRL_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: INCTRL_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end -}}

{{/* Writable scratch space for a read-only root filesystem. */}}
{{- define "inctrl.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{/* Serve args of one deployment (pool or domain): values keys -> DeploymentConfig keys.
Only keys present in values are emitted, so DeploymentConfig's defaults apply to the rest. */}}
{{- define "inctrl.deploymentArgs" -}}
{{- $args := dict -}}
{{- $autoscaling := .autoscaling | default dict -}}
{{- if $autoscaling.enabled -}}
{{- $scaling := dict -}}
{{- range $from, $to := dict "minReplicas" "min_replicas" "maxReplicas" "max_replicas" "targetOngoingRequests" "target_ongoing_requests" "upscaleDelayS" "upscale_delay_s" "downscaleDelayS" "downscale_delay_s" -}}
{{- if hasKey $autoscaling $from }}{{ $_ := set $scaling $to (get $autoscaling $from) }}{{ end -}}
{{- end -}}
{{- $_ := set $args "autoscaling" $scaling -}}
{{- else if hasKey . "replicas" -}}
{{- $_ := set $args "num_replicas" .replicas -}}
{{- end -}}
{{- if hasKey . "maxOngoingRequests" }}{{ $_ := set $args "max_ongoing_requests" .maxOngoingRequests }}{{ end -}}
{{- if hasKey . "maxQueuedRequests" }}{{ $_ := set $args "max_queued_requests" .maxQueuedRequests }}{{ end -}}
{{- $actor := dict -}}
{{- if hasKey . "numCpus" }}{{ $_ := set $actor "num_cpus" .numCpus }}{{ end -}}
{{- if hasKey . "numGpus" }}{{ $_ := set $actor "num_gpus" .numGpus }}{{ end -}}
{{- if $actor }}{{ $_ := set $args "ray_actor_options" $actor }}{{ end -}}
{{- with .batch -}}
{{- $batch := dict -}}
{{- if hasKey . "maxBatchSize" }}{{ $_ := set $batch "max_batch_size" .maxBatchSize }}{{ end -}}
{{- if hasKey . "batchWaitTimeoutS" }}{{ $_ := set $batch "batch_wait_timeout_s" .batchWaitTimeoutS }}{{ end -}}
{{- $_ := set $args "batch" $batch -}}
{{- end -}}
{{- if hasKey . "threshold" }}{{ $_ := set $args "threshold" .threshold }}{{ end -}}
{{- if .thresholds }}{{ $_ := set $args "thresholds" .thresholds }}{{ end -}}
{{- toYaml $args -}}
{{- end -}}

{{/* The Ray Serve config (serveConfigV2) of the RayService. */}}
{{- define "inctrl.serveConfig" -}}
{{- $serve := .Values.serve -}}
{{- $domains := dict -}}
{{- range $name, $domain := $serve.domains -}}
{{- $_ := set $domains $name (include "inctrl.deploymentArgs" $domain | fromYaml) -}}
{{- end -}}
{{- $args := dict
    "checkpoint_uri" $serve.checkpointUri
    "backbone" $serve.backbone
    "nn_backend" $serve.nnBackend
    "registry_prefix" $serve.registryPrefix
    "references_revision" (toString $serve.referencesRevision)
    "detector_timeout_s" $serve.detectorTimeoutS
    "batch" (dict "max_batch_size" $serve.batch.maxBatchSize "batch_wait_timeout_s" $serve.batch.batchWaitTimeoutS)
    "pool" (include "inctrl.deploymentArgs" $serve.pool | fromYaml)
    "domains" $domains -}}
{{- $app := dict
    "name" $serve.applicationName
    "import_path" $serve.importPath
    "route_prefix" $serve.routePrefix
    "args" $args -}}
{{- $config := dict
    "proxy_location" "EveryNode"
    "http_options" (dict "host" "0.0.0.0" "port" $serve.port)
    "logging_config" (dict "encoding" "JSON" "log_level" "INFO")
    "applications" (list $app) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* One NetworkPolicy egress rule: to these peers on these TCP ports. */}}
{{- define "inctrl.networkPolicyEgress" -}}
- to:
    {{- toYaml .peers | nindent 4 }}
  ports:
    {{- range .ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end -}}

{{/* Egress to the DNS resolvers. */}}
{{- define "inctrl.networkPolicyDns" -}}
- to:
    {{- toYaml .dns | nindent 4 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}
