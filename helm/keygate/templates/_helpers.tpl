{{/*
Named templates of the keygate chart.

Every template here that another chart may include (keygate.sidecar,
keygate.sidecarVolumes, keygate.podAnnotations, and the names they use) reads
only .Values and .Release, never .Chart. So the same template gives the same
answer in this chart (context: .) and in a parent chart that has keygate as a
dependency (context: dict "Values" .Values.keygate "Release" .Release): the
sidecar mounts exactly the ConfigMap and Secret this chart renders.
*/}}

{{/* The "name" part of resource names: "keygate" unless nameOverride. */}}
{{- define "keygate.name" -}}
{{- default "keygate" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the chart's resources: "<release>-keygate", or fullnameOverride. */}}
{{- define "keygate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "keygate.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select this release's pods. */}}
{{- define "keygate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of the chart's own resources (rendered with this chart's context only). */}}
{{- define "keygate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "keygate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Name of the ConfigMap holding keygate.yaml. */}}
{{- define "keygate.configMapName" -}}
{{- printf "%s-config" (include "keygate.fullname" .) -}}
{{- end -}}

{{/* Name of the Secret holding keys.yaml: existingSecret, or the chart's own. */}}
{{- define "keygate.secretName" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else -}}
{{- printf "%s-keys" (include "keygate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Name of the pods' ServiceAccount. */}}
{{- define "keygate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "keygate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Fails the render when ports.http / ports.admin differ from listen.port /
admin.port in the config literal (keygate's defaults: 8080 and 9090).
*/}}
{{- define "keygate.validate" -}}
{{- $cfg := fromYaml .Values.config -}}
{{- if hasKey $cfg "Error" -}}
{{- fail (printf "keygate: config is not valid YAML: %v" (get $cfg "Error")) -}}
{{- end -}}
{{- $listenPort := dig "listen" "port" 8080 $cfg | int -}}
{{- $adminPort := dig "admin" "port" 9090 $cfg | int -}}
{{- if ne $listenPort (.Values.ports.http | int) -}}
{{- fail (printf "keygate: ports.http (%v) must equal listen.port in config (%v)" .Values.ports.http $listenPort) -}}
{{- end -}}
{{- if ne $adminPort (.Values.ports.admin | int) -}}
{{- fail (printf "keygate: ports.admin (%v) must equal admin.port in config (%v)" .Values.ports.admin $adminPort) -}}
{{- end -}}
{{- if and (not .Values.existingSecret) (not .Values.keysFile) -}}
{{- fail "keygate: set keysFile or existingSecret: in production keygate does not start without keys" -}}
{{- end -}}
{{- end -}}

{{/*
Pod annotations for a pod that runs keygate: a checksum of the config (keygate
reads it only at startup, so a change rolls the pods; the keys are hot-reloaded
and deliberately not part of it) and, with metrics.podAnnotations, Prometheus
scrape annotations for the admin port.
*/}}
{{- define "keygate.podAnnotations" -}}
checksum/keygate-config: {{ .Values.config | sha256sum | quote }}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.admin | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/*
The keygate container, as one item of a pod's `containers:` list. Include it
next to the app's container; the app should listen on 127.0.0.1 at the host and
port of upstream.url in the config. Pair it with keygate.sidecarVolumes.

In this chart:    {{ include "keygate.sidecar" . | nindent 8 }}
In a parent chart: {{ include "keygate.sidecar" (dict "Values" .Values.keygate "Release" .Release) | nindent 8 }}
*/}}
{{- define "keygate.sidecar" -}}
- name: keygate
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  env:
    - name: KEYGATE_CONFIG
      value: /etc/keygate/config/keygate.yaml
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: keygate-http
      containerPort: {{ .Values.ports.http }}
      protocol: TCP
    - name: keygate-admin
      containerPort: {{ .Values.ports.admin }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz
      port: keygate-admin
    {{- with .Values.livenessProbe }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: keygate-admin
    {{- with .Values.readinessProbe }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: keygate-config
      mountPath: /etc/keygate/config
      readOnly: true
    # A directory mount, never subPath: the kubelet's atomic swap of a changed
    # Secret is then seen and the keys are hot-reloaded.
    - name: keygate-keys
      mountPath: /etc/keygate/keys
      readOnly: true
{{- end -}}

{{/*
The volumes keygate.sidecar mounts, as items of a pod's `volumes:` list: the
ConfigMap with keygate.yaml and the Secret with keys.yaml.

In this chart:    {{ include "keygate.sidecarVolumes" . | nindent 8 }}
In a parent chart: {{ include "keygate.sidecarVolumes" (dict "Values" .Values.keygate "Release" .Release) | nindent 8 }}
*/}}
{{- define "keygate.sidecarVolumes" -}}
- name: keygate-config
  configMap:
    name: {{ include "keygate.configMapName" . }}
- name: keygate-keys
  secret:
    secretName: {{ include "keygate.secretName" . }}
{{- end -}}
