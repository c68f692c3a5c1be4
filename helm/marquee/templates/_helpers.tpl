{{/* The release's name prefix of every object (63 characters at most). */}}
{{- define "marquee.fullname" -}}
{{- if .Values.kustomize -}}
marquee
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: <fullname>-<component>. */}}
{{- define "marquee.name" -}}
{{- printf "%s-%s" (include "marquee.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component (stable across upgrades). */}}
{{- define "marquee.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ ternary "marquee" .root.Release.Name .root.Values.kustomize }}
{{- end -}}

{{/* The recommended labels of one component's objects. */}}
{{- define "marquee.labels" -}}
{{ include "marquee.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: marquee
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- if .root.Values.kustomize }}
app.kubernetes.io/managed-by: kustomize
{{- else }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}
{{- end -}}

{{/* The image of one component. */}}
{{- define "marquee.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- printf "%s/%s-%s:%s" .root.Values.image.registry .root.Values.image.repository .component $tag -}}
{{- end -}}

{{/* The cluster URL of a recommender arm (stable or canary). */}}
{{- define "marquee.recommenderUrl" -}}
{{- printf "http://%s:8082" (include "marquee.name" (dict "root" .root "component" (printf "recommender-%s" .arm))) -}}
{{- end -}}

{{/*
The experiment's arms: explicit ones, or control (stable) and canary by canaryWeight.  Fails
the render when the weights do not add up to 100 or an arm is malformed, so a bad experiment
never reaches the router (which would refuse it and keep serving the old one).
*/}}
{{- define "marquee.arms" -}}
{{- $e := .Values.experiment -}}
{{- $arms := list -}}
{{- if $e.arms -}}
{{- $arms = $e.arms -}}
{{- else -}}
{{- $w := $e.canaryWeight -}}
{{- $arms = list (dict "name" "control" "url" (include "marquee.recommenderUrl" (dict "root" . "arm" "stable")) "weight" (sub 100 $w) "model" .Values.modelName "channel" "stable") -}}
{{- if .Values.recommender.canary.enabled -}}
{{- $arms = append $arms (dict "name" "canary" "url" (include "marquee.recommenderUrl" (dict "root" . "arm" "canary")) "weight" $w "model" .Values.modelName "channel" "canary") -}}
{{- else if ne (int $w) 0 -}}
{{- fail (printf "experiment.canaryWeight is %v but recommender.canary.enabled is false: set the weight to 0 or enable the canary" $w) -}}
{{- end -}}
{{- end -}}
{{- $total := 0.0 -}}
{{- range $arms -}}
{{- if not (and .name .url) -}}
{{- fail (printf "experiment.arms: every arm needs a name and a url (got %v)" .) -}}
{{- end -}}
{{- if or (lt (float64 .weight) 0.0) (gt (float64 .weight) 100.0) -}}
{{- fail (printf "experiment arm %s: weight %v is outside 0..100" .name .weight) -}}
{{- end -}}
{{- $total = addf $total (float64 .weight) -}}
{{- end -}}
{{- if or (lt $total 99.99) (gt $total 100.01) -}}
{{- fail (printf "experiment: arm weights add up to %v, not 100" $total) -}}
{{- end -}}
{{- toJson $arms -}}
{{- end -}}

{{/* Pod-level settings every workload shares. */}}
{{- define "marquee.podSpecCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes of an HTTP service on a named port. */}}
{{- define "marquee.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}

{{/* The model-signing key as a mounted Secret (volume, mount and variable). */}}
{{- define "marquee.signingEnv" -}}
{{- if .Values.modelSigning.existingSecret }}
- name: MARQUEE_MODEL_SIGNING_KEY_FILE
  value: /etc/marquee/signing/key
{{- end }}
{{- end -}}
{{- define "marquee.signingMount" -}}
{{- if .Values.modelSigning.existingSecret }}
- name: signing
  mountPath: /etc/marquee/signing
  readOnly: true
{{- end }}
{{- end -}}
{{- define "marquee.signingVolume" -}}
{{- if .Values.modelSigning.existingSecret }}
- name: signing
  secret:
    secretName: {{ .Values.modelSigning.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* The ServiceAccount name of one component. */}}
{{- define "marquee.serviceAccount" -}}
{{- include "marquee.name" . -}}
{{- end -}}
