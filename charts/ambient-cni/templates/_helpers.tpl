{{/*
Every template starts with
  {{- $_ := include "ambient-cni.values" . }}
The first call builds .Values as upstream's chart does (its zzz_profile.yaml
and zzy_descope_legacy.yaml): the defaults (values.yaml's
_internal_defaults_do_not_set), the chosen profile, compatibility version and
platform files over them, what the user set over those, and finally the
user's `cni:` values (istioctl's layout) over the top level. Later calls find
the defaults key gone and only repeat the checks, so it does not matter
which template Helm renders first. Only functions Helm has are used (sprig
without env/expandenv, plus include, tpl, toYaml, fromYaml, required and
.Files): test/tools/chart-render enforces that.
*/}}
{{- define "ambient-cni.values" -}}
{{- if hasKey .Values "_internal_defaults_do_not_set" }}
{{- include "ambient-cni.mergeProfiles" . }}
{{- end }}
{{- if not .Values.ambient.enabled }}
{{- fail "ambient.enabled=false is not supported: ambient-agent is an ambient node agent only (use upstream's istio-cni chart for sidecar-only CNI)" }}
{{- end }}
{{- if not (has .Values.global.resourceScope (list "all" "cluster" "namespace")) }}
{{- fail (printf "global.resourceScope %q: want all, cluster or namespace" (toString .Values.global.resourceScope)) }}
{{- end }}
{{- end }}

{{/*
Helm hands templates the user's values already coalesced over values.yaml,
which leaves no place for a profile between the two. So, as upstream, the
defaults live under one key of their own: taken out, overlaid with the
profile files (profile, then compatibilityVersion, then platform, each
winning over the one before), then with everything the user set. sprig's
mergeOverwrite (mergo) copies false, "" and null over a default, so a user's
`--set chained=false` or `--set resources=null` takes effect.

Unlike upstream, whose profile files are shared by all Istio charts and keep
this chart's keys under `cni:` (which then wins even over the user's own
top-level value), ours hold only this chart's values at the top level: the
user's value always wins over the profile's, as upstream documents.
*/}}
{{- define "ambient-cni.mergeProfiles" -}}
{{- if .Values.defaults }}
{{- fail (printf "values set under defaults. found; set them without that prefix (--set hub=foo, not --set defaults.hub=foo). Set:\n%s" (toYaml .Values.defaults)) }}
{{- end }}
{{- $defaults := get .Values "_internal_defaults_do_not_set" }}
{{- $_ := unset .Values "_internal_defaults_do_not_set" }}
{{- $profile := dict }}
{{- with coalesce .Values.profile (.Values.global).profile }}
{{- $file := include "ambient-cni.profileFile" (dict "Files" $.Files "what" "profile" "name" . "file" (printf "files/profile-%s.yaml" .)) }}
{{- $profile = mustMergeOverwrite $profile (fromYaml $file) }}
{{- end }}
{{- with .Values.compatibilityVersion }}
{{- $v := toString . }}
{{- $file := include "ambient-cni.profileFile" (dict "Files" $.Files "what" "compatibilityVersion" "name" $v "file" (printf "files/profile-compatibility-version-%s.yaml" $v)) }}
{{- $profile = mustMergeOverwrite $profile (fromYaml $file) }}
{{- end }}
{{- with coalesce .Values.platform (.Values.global).platform }}
{{- $file := include "ambient-cni.profileFile" (dict "Files" $.Files "what" "platform" "name" . "file" (printf "files/profile-platform-%s.yaml" .)) }}
{{- $profile = mustMergeOverwrite $profile (fromYaml $file) }}
{{- end }}
{{- $_ := mustMergeOverwrite $defaults $profile }}
{{- $_ := set . "Values" (mustMergeOverwrite $defaults .Values) }}
{{- with .Values.cni }}
{{- $_ := mustMergeOverwrite $.Values . }}
{{- end }}
{{- end }}

{{/*
A profile file's YAML, or a failure naming what is unknown. Its input is a
dict: Files, what (the value's name), name (its value) and file.
*/}}
{{- define "ambient-cni.profileFile" -}}
{{- $text := .Files.Get .file }}
{{- if not $text }}
{{- fail (printf "unknown %s %q: the chart has no %s" .what .name .file) }}
{{- end }}
{{- if hasKey (fromYaml $text) "Error" }}
{{- fail (printf "%s: %s" .file (get (fromYaml $text) "Error")) }}
{{- end }}
{{- $text }}
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
install.operator.istio.io/owning-resource: {{ .Values.ownerName | default "unknown" | quote }}
{{- end }}

{{/*
The agent's resources from a resources value (limits and requests, as
upstream): entries whose value is empty or null are left out, and so is a
section left with none.
*/}}
{{- define "ambient-cni.resources" -}}
{{- $out := dict }}
{{- range $key := list "limits" "requests" }}
{{- with index $ $key }}
{{- $kept := dict }}
{{- range $name, $value := . }}
{{- if $value }}
{{- $_ := set $kept $name $value }}
{{- end }}
{{- end }}
{{- if $kept }}
{{- $_ := set $out $key $kept }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}
