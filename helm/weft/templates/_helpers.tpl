{{/* Names, labels and the values every template shares. */}}

{{- define "weft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weft.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "weft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weft.labels" -}}
helm.sh/chart: {{ include "weft.chart" . }}
app.kubernetes.io/name: {{ include "weft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: include "weft.selectorLabels" (list $ "sidecar") */}}
{{- define "weft.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "weft.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "weft.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "weft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "weft.placement.fullname" -}}
{{- printf "%s-placement" (include "weft.fullname" .) }}
{{- end }}

{{/* Stable DNS name of placement pod N (via the headless Service). */}}
{{- define "weft.placement.podHost" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "weft.placement.fullname" $root) (index . 1) (include "weft.placement.fullname" $root) $root.Release.Namespace $root.Values.clusterDomain }}
{{- end }}

{{/* `1=host:port,2=host:port,…`: raft id N+1 is pod ordinal N. */}}
{{- define "weft.placement.initialCluster" -}}
{{- $root := . -}}
{{- $parts := list -}}
{{- range $i := until (int .Values.placement.replicas) -}}
{{- $parts = append $parts (printf "%d=%s:%d" (add1 $i) (include "weft.placement.podHost" (list $root $i)) (int $root.Values.placement.port)) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end }}

{{/* `host:port,host:port,…` of every placement node, for the sidecars. */}}
{{- define "weft.placement.addresses" -}}
{{- $root := . -}}
{{- $parts := list -}}
{{- range $i := until (int .Values.placement.replicas) -}}
{{- $parts = append $parts (printf "%s:%d" (include "weft.placement.podHost" (list $root $i)) (int $root.Values.placement.port)) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end }}

{{- define "weft.configMapName" -}}
{{- printf "%s-config" (include "weft.fullname" .) }}
{{- end }}

{{- define "weft.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "weft.fullname" .) }}
{{- end }}

{{/* Secret and key holding the database URL. */}}
{{- define "weft.database.secretName" -}}
{{- if .Values.postgresql.enabled }}
{{- include "weft.postgresql.fullname" . }}
{{- else }}
{{- required "database.existingSecret is required when postgresql.enabled is false" .Values.database.existingSecret }}
{{- end }}
{{- end }}

{{- define "weft.database.secretKey" -}}
{{- if .Values.postgresql.enabled }}database-url{{ else }}{{ .Values.database.secretKey }}{{ end }}
{{- end }}

{{- define "weft.apiToken.secretName" -}}
{{- if .Values.apiToken.existingSecret }}
{{- .Values.apiToken.existingSecret }}
{{- else }}
{{- printf "%s-api-token" (include "weft.fullname" .) }}
{{- end }}
{{- end }}

{{- define "weft.apiToken.enabled" -}}
{{- if or .Values.apiToken.value .Values.apiToken.existingSecret .Values.apiToken.generate }}true{{ end }}
{{- end }}

{{/* Pod anti-affinity spreading one component over nodes: (list $ "sidecar" "soft"), or with
the selector labels given: (list $ "sidecar" "soft" LABELS) (one app's sidecars). */}}
{{- define "weft.antiAffinity" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $mode := index . 2 -}}
{{- $labels := include "weft.selectorLabels" (list $root $component) -}}
{{- if gt (len .) 3 }}{{ $labels = index . 3 }}{{ end -}}
podAntiAffinity:
{{- if eq $mode "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- $labels | nindent 10 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- $labels | nindent 12 }}
{{- end }}
{{- end }}

{{/* ---- Apps: one sidecar Deployment (and Service, PDB, HPA, identity) per app ID ---- */}}

{{/* The label naming a listed app's sidecars (Services select one app's pods by it). */}}
{{- define "weft.appIdLabel" -}}weft.dev/app-id{{- end }}

{{/* Fills (index . 1), a dict, with "apps": one entry per app the release runs. With `apps`
empty that is `sidecar.appId` under the names of a single-app release (`FULLNAME-sidecar`, Service
`FULLNAME`, no app-id label: existing installs render unchanged); else one per listed app, named
`FULLNAME-APPID`, whose settings are `sidecar.*` with the app's overrides (maps merge key by key;
resources, lists and other maps replace). A dict is filled rather than text returned so values
keep their types. Entry: appId, name, serviceName, listed, selectorLabels, tlsSecret, settings. */}}
{{- define "weft.apps" -}}
{{- $root := index . 0 -}}
{{- $out := index . 1 -}}
{{- $fullname := include "weft.fullname" $root -}}
{{- $sidecar := include "weft.selectorLabels" (list $root "sidecar") -}}
{{- $apps := list -}}
{{- if not $root.Values.apps -}}
{{- $apps = append $apps (dict "appId" $root.Values.sidecar.appId "name" (printf "%s-sidecar" $fullname)
    "serviceName" $fullname "listed" false "selectorLabels" $sidecar
    "tlsSecret" (include "weft.tls.secretName" (list $root "sidecar")) "settings" $root.Values.sidecar) -}}
{{- else -}}
{{- $seen := dict -}}
{{- $mode := include "weft.tls.mode" $root -}}
{{- range $i, $a := $root.Values.apps -}}
{{- if hasKey $seen $a.appId -}}
{{- fail (printf "apps[%d].appId: %q is listed twice (each app ID once: it names the app's Deployment, Service and identity)" $i $a.appId) -}}
{{- end -}}
{{- $_ := set $seen $a.appId true -}}
{{- $name := printf "%s-%s" $fullname $a.appId -}}
{{- if gt (len $name) 63 -}}
{{- fail (printf "apps[%d].appId: %q makes the name %q longer than 63 characters (shorten the app ID, the release name or fullnameOverride)" $i $a.appId $name) -}}
{{- end -}}
{{- $settings := deepCopy $root.Values.sidecar -}}
{{- range $k, $v := omit $a "appId" "existingTlsSecret" -}}
{{- if and (kindIs "map" $v) (has $k (list "autoscaling" "podDisruptionBudget" "service")) -}}
{{- $_ := set $settings $k (mergeOverwrite (deepCopy (index $root.Values.sidecar $k)) $v) -}}
{{- else -}}
{{- $_ := set $settings $k $v -}}
{{- end -}}
{{- end -}}
{{- $tlsSecret := printf "%s-%s-tls" $fullname $a.appId -}}
{{- if eq $mode "existing" -}}
{{- $tlsSecret = required (printf "apps[%d].existingTlsSecret is required with tls.existingSecrets (the Secret with app %s's certificate)" $i $a.appId) $a.existingTlsSecret -}}
{{- end -}}
{{- $labels := printf "%s\n%s: %s" $sidecar (include "weft.appIdLabel" $root) $a.appId -}}
{{- $apps = append $apps (dict "appId" $a.appId "name" $name "serviceName" $name "listed" true
    "selectorLabels" $labels "tlsSecret" $tlsSecret "settings" $settings) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out "apps" $apps -}}
{{- end }}

{{/* Labels of one app's objects (metadata and pod template): (list $ APP) */}}
{{- define "weft.app.labels" -}}
{{- $root := index . 0 -}}
{{- $app := index . 1 -}}
{{- include "weft.labels" $root }}
app.kubernetes.io/component: sidecar
{{- if $app.listed }}
{{ include "weft.appIdLabel" $root }}: {{ $app.appId }}
{{- end }}
{{- end }}

{{/* ---- TLS (docs/security.md) ---- */}}

{{/* Where certificates come from: certManager, existing, generated, or "" (TLS off). */}}
{{- define "weft.tls.mode" -}}
{{- if .Values.tls.enabled -}}
{{- if .Values.tls.certManager.enabled -}}certManager
{{- else if or .Values.tls.existingSecrets.placement .Values.tls.existingSecrets.sidecar (include "weft.tls.appSecretsGiven" .) -}}existing
{{- else -}}generated
{{- end -}}
{{- end -}}
{{- end }}

{{/* "true" when a listed app names its own existing TLS Secret. */}}
{{- define "weft.tls.appSecretsGiven" -}}
{{- range .Values.apps }}{{ if .existingTlsSecret }}true{{ end }}{{ end -}}
{{- end }}

{{- define "weft.tls.caSecretName" -}}
{{- printf "%s-tls-ca" (include "weft.fullname" .) }}
{{- end }}

{{/* The Secret holding a component's tls.crt, tls.key and ca.crt: (list $ "sidecar") */}}
{{- define "weft.tls.secretName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- if eq (include "weft.tls.mode" $root) "existing" -}}
{{- required (printf "tls.existingSecrets.%s is required with the other one" $component) (index $root.Values.tls.existingSecrets $component) }}
{{- else -}}
{{- printf "%s-%s-tls" (include "weft.fullname" $root) $component }}
{{- end -}}
{{- end }}

{{/* SPIFFE ID of a name in this release's namespace: (list $ "weft-placement") */}}
{{- define "weft.tls.spiffeId" -}}
{{- $root := index . 0 -}}
{{- printf "spiffe://%s/ns/%s/%s" $root.Values.tls.trustDomain $root.Release.Namespace (index . 1) }}
{{- end }}

{{/* The WEFT_TLS_* variables of a weft container (the files are under /var/run/weft/tls). */}}
{{- define "weft.tls.env" -}}
{{- if include "weft.tls.mode" . }}
- name: WEFT_TLS_CERT
  value: /var/run/weft/tls/tls.crt
- name: WEFT_TLS_KEY
  value: /var/run/weft/tls/tls.key
- name: WEFT_TLS_CA
  value: /var/run/weft/tls/ca.crt
- name: WEFT_TLS_TRUST_DOMAIN
  value: {{ .Values.tls.trustDomain | quote }}
- name: WEFT_TLS_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- end }}
{{- end }}

{{- define "weft.tls.volumeMounts" -}}
{{- if include "weft.tls.mode" . }}
- name: tls
  mountPath: /var/run/weft/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Generated mode: an init container issues this pod's leaf from the chart's CA into memory;
the CA key is mounted into the init container only. (list $ "sidecar" ARGS) */}}
{{- define "weft.tls.initContainers" -}}
{{- $root := index . 0 -}}
{{- if eq (include "weft.tls.mode" $root) "generated" }}
- name: certs
  image: {{ include "weft.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: ["weft"]
  args:
    - certs
    {{- range index . 2 }}
    - {{ . | quote }}
    {{- end }}
    - --ca
    - /var/run/weft/ca
    - --out
    - /var/run/weft/tls
    - --trust-domain
    - {{ $root.Values.tls.trustDomain | quote }}
    - --namespace
    - {{ $root.Release.Namespace | quote }}
    - --days
    - {{ $root.Values.tls.generated.leafDays | quote }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {memory: 64Mi}
  volumeMounts:
    - name: tls-ca
      mountPath: /var/run/weft/ca
      readOnly: true
    - name: tls
      mountPath: /var/run/weft/tls
{{- end }}
{{- end }}

{{/* (list $ "placement"), or with the Secret named: (list $ "sidecar" SECRET) (one app's) */}}
{{- define "weft.tls.volumes" -}}
{{- $root := index . 0 -}}
{{- $mode := include "weft.tls.mode" $root -}}
{{- if eq $mode "generated" }}
- name: tls
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: tls-ca
  secret:
    secretName: {{ include "weft.tls.caSecretName" $root }}
    defaultMode: 0440
{{- else if $mode }}
- name: tls
  secret:
    secretName: {{ if gt (len .) 2 }}{{ index . 2 }}{{ else }}{{ include "weft.tls.secretName" (list $root (index . 1)) }}{{ end }}
    defaultMode: 0440
{{- end }}
{{- end }}
