{{/*
Names, labels, images, security contexts and environment shared by every template.
*/}}

{{- define "kluis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kluis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's objects: <fullname>-<component>. */}}
{{- define "kluis.componentName" -}}
{{- printf "%s-%s" (include "kluis.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Cluster-scoped names carry the namespace so two releases never collide. */}}
{{- define "kluis.clusterName" -}}
{{- printf "%s-%s-%s" .root.Release.Namespace (include "kluis.fullname" .root) .component | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{- define "kluis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of a component (stable across upgrades). */}}
{{- define "kluis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kluis.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of a component's objects. */}}
{{- define "kluis.labels" -}}
{{ include "kluis.selectorLabels" . }}
helm.sh/chart: {{ include "kluis.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: kluis
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels as JSON (KLUIS_HUB_POD_LABELS, KLUIS_PROXY_POD_LABELS). */}}
{{- define "kluis.selectorLabelsJson" -}}
{{- include "kluis.selectorLabels" . | fromYaml | toJson -}}
{{- end -}}

{{- define "kluis.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "kluis.secretName" -}}
{{- default (include "kluis.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "kluis.databaseSecretName" -}}
{{- default (include "kluis.fullname" .) .Values.database.postgresql.existingSecret -}}
{{- end -}}

{{- define "kluis.databaseSecretKey" -}}
{{- if .Values.database.postgresql.existingSecret -}}
{{- .Values.database.postgresql.existingSecretKey -}}
{{- else -}}
database-url
{{- end -}}
{{- end -}}

{{- define "kluis.publicUrl" -}}
{{- default (printf "https://%s" .Values.ingress.host) .Values.kluis.publicUrl | trimSuffix "/" -}}
{{- end -}}

{{/* Pod-level security context: Pod Security "restricted". */}}
{{- define "kluis.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context: Pod Security "restricted", read-only root. */}}
{{- define "kluis.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Where a storage area is mounted in Kluis's containers: the node path itself for hostPath
(workspaces use the same node paths), a fixed folder otherwise. */}}
{{- define "kluis.mountPath" -}}
{{- if eq .root.Values.storage.backend "hostPath" -}}
{{- (index .root.Values.storage .area).path -}}
{{- else -}}
{{- printf "/var/lib/kluis/%s" .area -}}
{{- end -}}
{{- end -}}

{{- define "kluis.claimName" -}}
{{- $area := index .root.Values.storage .area -}}
{{- default (include "kluis.componentName" (dict "root" .root "component" .area)) $area.existingClaim -}}
{{- end -}}

{{- define "kluis.sqliteClaimName" -}}
{{- default (include "kluis.componentName" (dict "root" . "component" "sqlite")) .Values.database.sqlite.existingClaim -}}
{{- end -}}

{{- define "kluis.isSqlite" -}}
{{- if eq .Values.database.type "sqlite" -}}true{{- end -}}
{{- end -}}

{{/* Volumes of a Kluis process: the storage areas it needs (list .areas), the data folder. */}}
{{- define "kluis.volumes" -}}
{{- $root := .root -}}
{{- range .areas }}
- name: {{ . }}
  persistentVolumeClaim:
    claimName: {{ include "kluis.claimName" (dict "root" $root "area" .) }}
{{- end }}
- name: data
{{- if include "kluis.isSqlite" $root }}
  persistentVolumeClaim:
    claimName: {{ include "kluis.sqliteClaimName" $root }}
{{- else }}
  emptyDir:
    sizeLimit: 1Gi
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "kluis.volumeMounts" -}}
{{- $root := .root -}}
{{- range .areas }}
- name: {{ . }}
  mountPath: {{ include "kluis.mountPath" (dict "root" $root "area" .) }}
  readOnly: {{ eq . "microdata" }}
{{- end }}
- name: data
  mountPath: /var/lib/kluis/data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Environment of the control plane, the reconciler, the scheduler and the migration Job:
the shared ConfigMap plus the secrets, each from its Secret (never a plain value). */}}
{{- define "kluis.env" -}}
- name: KLUIS_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "kluis.secretName" . }}
      key: secret-key
{{- if not (include "kluis.isSqlite" .) }}
- name: KLUIS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "kluis.databaseSecretName" . }}
      key: {{ include "kluis.databaseSecretKey" . }}
{{- end }}
- name: KLUIS_HUB_SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "kluis.secretName" . }}
      key: hub-service-token
- name: KLUIS_HUB_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "kluis.secretName" . }}
      key: hub-api-token
- name: KLUIS_AIRLOCK_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "kluis.secretName" . }}
      key: airlock-signing-key
{{- if .Values.smtp.existingSecret }}
- name: KLUIS_SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.smtp.existingSecret }}
      key: {{ .Values.smtp.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* The Kluis settings as KLUIS_* variables (the ConfigMap's data). */}}
{{- define "kluis.settings" -}}
{{- $v := .Values -}}
KLUIS_ENVIRONMENT: {{ $v.kluis.environment | quote }}
KLUIS_LOG_FORMAT: "json"
KLUIS_LOG_LEVEL: {{ $v.kluis.logLevel | quote }}
KLUIS_DATA_DIR: "/var/lib/kluis/data"
KLUIS_HOST: "0.0.0.0"
KLUIS_PORT: {{ $v.controlPlane.service.port | quote }}
KLUIS_PUBLIC_URL: {{ include "kluis.publicUrl" . | quote }}
KLUIS_TRUSTED_PROXIES: {{ $v.kluis.trustedProxies | toJson | quote }}
{{- if $v.kluis.computeSizes }}
KLUIS_COMPUTE_SIZES: {{ $v.kluis.computeSizes | toJson | quote }}
{{- end }}
{{- if include "kluis.isSqlite" . }}
KLUIS_ALLOW_SQLITE_IN_PRODUCTION: "true"
{{- end }}
KLUIS_SMTP_HOST: {{ $v.smtp.host | quote }}
KLUIS_SMTP_PORT: {{ $v.smtp.port | quote }}
KLUIS_SMTP_STARTTLS: {{ $v.smtp.starttls | quote }}
{{- if $v.smtp.username }}
KLUIS_SMTP_USERNAME: {{ $v.smtp.username | quote }}
{{- end }}
KLUIS_MAIL_FROM: {{ $v.smtp.from | quote }}
KLUIS_STORAGE_BACKEND: {{ $v.storage.backend | quote }}
KLUIS_MICRODATA_ROOT: {{ include "kluis.mountPath" (dict "root" . "area" "microdata") | quote }}
KLUIS_PROJECT_STORAGE_ROOT: {{ include "kluis.mountPath" (dict "root" . "area" "projects") | quote }}
KLUIS_ARCHIVE_ROOT: {{ include "kluis.mountPath" (dict "root" . "area" "archive") | quote }}
KLUIS_AIRLOCK_DIR: {{ include "kluis.mountPath" (dict "root" . "area" "airlock") | quote }}
KLUIS_STORAGE_MICRODATA_PATH: {{ $v.storage.microdata.path | quote }}
KLUIS_STORAGE_PROJECTS_PATH: {{ $v.storage.projects.path | quote }}
{{- if eq $v.storage.backend "nfs" }}
KLUIS_STORAGE_NFS_SERVER: {{ $v.storage.nfs.server | quote }}
{{- end }}
{{- if eq $v.storage.backend "csi" }}
KLUIS_STORAGE_CSI_DRIVER: {{ $v.storage.csi.driver | quote }}
KLUIS_STORAGE_CSI_VOLUME_HANDLE: {{ $v.storage.csi.volumeHandle | quote }}
{{- end }}
{{- if $v.clamav.existingAddress }}
KLUIS_CLAMD_ADDRESS: {{ $v.clamav.existingAddress | quote }}
{{- else }}
KLUIS_CLAMD_SOCKET: "/run/clamav/clamd.ctl"
{{- end }}
KLUIS_HUB_NAMESPACE: {{ .Release.Namespace | quote }}
KLUIS_HUB_SERVICE_ACCOUNT: {{ include "kluis.componentName" (dict "root" . "component" "hub") | quote }}
KLUIS_HUB_POD_LABELS: {{ include "kluis.selectorLabelsJson" (dict "root" . "component" "hub") | quote }}
KLUIS_PROXY_POD_LABELS: {{ include "kluis.selectorLabelsJson" (dict "root" . "component" "proxy") | quote }}
KLUIS_HUB_API_PORT: "8081"
KLUIS_HUB_PUBLIC_URL: {{ printf "%s%s" (include "kluis.publicUrl" .) ($v.hub.baseUrl | trimSuffix "/") | quote }}
KLUIS_HUB_API_URL: {{ printf "http://%s:8081%shub/api" (include "kluis.componentName" (dict "root" . "component" "hub")) $v.hub.baseUrl | quote }}
KLUIS_HUB_SYNC_INTERVAL_SECONDS: {{ $v.hubSync.intervalSeconds | quote }}
KLUIS_WORKSPACE_IMAGES: {{ toJson (default (list (printf "kluis/workspace:%s" .Chart.AppVersion)) $v.hub.workspaceImages) | quote }}
KLUIS_RECONCILE_CONCURRENCY: {{ $v.reconciler.concurrency | quote }}
KLUIS_RECONCILE_INTERVAL_SECONDS: {{ $v.reconciler.resyncSeconds | quote }}
KLUIS_FIELD_MANAGER: {{ $v.reconciler.fieldManager | quote }}
KLUIS_LEADER_ELECTION: "true"
KLUIS_LEADER_ELECTION_NAMESPACE: {{ .Release.Namespace | quote }}
KLUIS_LEADER_ELECTION_LEASE_NAME: {{ include "kluis.componentName" (dict "root" . "component" "reconciler") | quote }}
KLUIS_LEADER_ELECTION_LEASE_SECONDS: {{ $v.reconciler.leaderElection.leaseSeconds | quote }}
KLUIS_LEADER_ELECTION_RENEW_SECONDS: {{ $v.reconciler.leaderElection.renewSeconds | quote }}
KLUIS_RECONCILE_METRICS_HOST: "0.0.0.0"
KLUIS_RECONCILE_METRICS_PORT: {{ $v.reconciler.metricsPort | quote }}
{{- range $key, $value := $v.kluis.extraEnv }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Egress rule to CIDRs (with the metadata endpoints excepted) on ports. */}}
{{- define "kluis.egressToCidrs" -}}
- to:
{{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
{{- if and $.except (eq . "0.0.0.0/0") }}
        except: {{ toJson $.except }}
{{- end }}
{{- end }}
  ports:
{{- range .ports }}
    - protocol: TCP
      port: {{ . }}
{{- end }}
{{- end -}}

{{/* DNS for everyone who needs names (UDP and TCP 53, any destination in the cluster). */}}
{{- define "kluis.egressDns" -}}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}

{{/* Peer: pods of one of this release's components. */}}
{{- define "kluis.peer" -}}
- podSelector:
    matchLabels:
      {{- include "kluis.selectorLabels" . | nindent 6 }}
{{- end -}}

{{- define "kluis.clamavMounts" -}}
- name: clamd-socket
  mountPath: /run/clamav
- name: clamav-db
  mountPath: /var/lib/clamav
- name: clamav-config
  mountPath: /etc/kluis-clamav
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "kluis.checksum" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}
