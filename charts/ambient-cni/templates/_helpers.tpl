{{/*
Every template starts with
  {{- $_ := include "ambient-cni.values" . }}
which folds values given under `cni:` (istioctl's layout) into the top level
and checks what the chart cannot work without. It changes .Values in place
and is idempotent, so it does not matter which template Helm renders first.
Only functions Helm has are used (sprig without env/expandenv, plus include,
tpl, toYaml, required): test/tools/chart-render enforces that.
*/}}
{{- define "ambient-cni.values" -}}
{{- if .Values.cni }}
{{- include "ambient-cni.deepSet" (dict "dst" .Values "src" .Values.cni) }}
{{- end }}
{{- if not .Values.ambient.enabled }}
{{- fail "ambient.enabled=false is not supported: ambient-agent is an ambient node agent only (use upstream's istio-cni chart for sidecar-only CNI)" }}
{{- end }}
{{- end }}

{{/*
Deep assignment of .src into .dst. Unlike sprig's mergeOverwrite (mergo),
it also copies false, 0 and "" over a default, so
`cni.ambient.dnsCapture=false` turns DNS capture off.
*/}}
{{- define "ambient-cni.deepSet" -}}
{{- $dst := .dst }}
{{- range $k, $v := .src }}
{{- if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) }}
{{- include "ambient-cni.deepSet" (dict "dst" (get $dst $k) "src" $v) }}
{{- else }}
{{- $_ := set $dst $k $v }}
{{- end }}
{{- end }}
{{- end }}

{{/*
<hub>/<image>:<tag>[-<variant>], top-level values winning over global.*, as
upstream. An image containing "/" is a full reference.
*/}}
{{- define "ambient-cni.image" -}}
{{- $image := .Values.image | default "ambient-cni" -}}
{{- if contains "/" $image -}}
{{ $image }}
{{- else -}}
{{- $hub := required "global.hub (or hub) is required: the agent image is <hub>/ambient-cni:<tag>" (.Values.hub | default .Values.global.hub) -}}
{{- $tag := required "global.tag (or tag) is required: the agent image is <hub>/ambient-cni:<tag>" (.Values.tag | default .Values.global.tag) -}}
{{- $variant := .Values.variant | default .Values.global.variant -}}
{{ $hub }}/{{ $image }}:{{ $tag }}{{ if $variant }}-{{ $variant }}{{ end }}
{{- end -}}
{{- end }}

{{/*
Host directory of the CNI binaries: cniBinDir, else GKE's, else the default.
*/}}
{{- define "ambient-cni.cniBinDir" -}}
{{- if .Values.cniBinDir -}}
{{ .Values.cniBinDir }}
{{- else if contains "-gke" .Capabilities.KubeVersion.Version -}}
/home/kubernetes/bin
{{- else -}}
/opt/cni/bin
{{- end -}}
{{- end }}

{{/* Labels on every object. */}}
{{- define "ambient-cni.labels" -}}
app.kubernetes.io/name: istio-cni
app.kubernetes.io/part-of: istio
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
istio.io/rev: {{ .Values.revision | default "default" | quote }}
operator.istio.io/component: Cni
{{- end }}
