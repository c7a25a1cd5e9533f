{{/* The release's full name, at most 63 characters (Kubernetes names). */}}
{{- define "rosetta.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: "<fullname>-<component>", cut to 52 characters so a CronJob's Jobs
(11 more characters) still fit. */}}
{{- define "rosetta.componentName" -}}
{{- printf "%s-%s" (include "rosetta.fullname" .root) .component | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "rosetta.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rosetta.labels" -}}
{{ include "rosetta.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: rosetta
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The CronJob a run started through the API is copied from (the Kubernetes launcher). */}}
{{- define "rosetta.launchedCronJob" -}}
{{- include "rosetta.componentName" (dict "root" . "component" "batch-finops") -}}
{{- end -}}

{{/* How long a run queued through the finops API may wait for its start: a launched Job that started no pod
within its activeDeadlineSeconds never will (Kubernetes fails it), so past that plus a margin for the Job
controller, the job's next run or launch records the run expired (ROSETTA_BATCH_QUEUE_EXPIRY_SECONDS). */}}
{{- define "rosetta.queueExpirySeconds" -}}
{{- $job := mergeOverwrite (deepCopy .Values.jobDefaults) (index .Values.cronJobs "batch-finops") -}}
{{- add (required "cronJobs.batch-finops.activeDeadlineSeconds" $job.activeDeadlineSeconds | int) 900 -}}
{{- end -}}

{{/* True when finops API calls start runs as Kubernetes Jobs. */}}
{{- define "rosetta.launchesJobs" -}}
{{- if eq .Values.batchLauncher "kubernetes" -}}
{{- if not (index .Values.cronJobs "batch-finops").enabled -}}
{{- fail "batchLauncher=kubernetes copies the batch-finops CronJob: enable cronJobs.batch-finops, or set batchLauncher=in-process" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{- define "rosetta.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rosetta.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rosetta.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* What every pod shares: account, security, placement, and the only writable path (/tmp, an emptyDir).
Takes "root", "serviceAccountName" (empty: the namespace's default account) and "mountToken" (only the pods
that call the Kubernetes API get a service-account token). */}}
{{- define "rosetta.podSpec" -}}
automountServiceAccountToken: {{ .mountToken | default false }}
{{- with .serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .root }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 1Gi
{{- end }}
{{- end -}}

{{/* The container fields every process shares: image, security, configuration, /tmp.
Takes "root" and "env", the process's own variables (a list of name/value maps). */}}
{{- define "rosetta.container" -}}
{{- $root := .root -}}
{{- with $root -}}
image: {{ include "rosetta.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
env:
  - name: ROSETTA_ENV
    value: {{ .Values.environment | quote }}
  - name: ROSETTA_LOG_LEVEL
    value: {{ .Values.logLevel | quote }}
  - name: ROSETTA_DATA_DIR
    value: /tmp/rosetta
  - name: ROSETTA_RAW_STORE
    value: {{ .Values.rawStore | quote }}
  - name: ROSETTA_MONGODB_DATABASE
    value: {{ .Values.mongodbDatabase | quote }}
  {{- if (index .Values.cronJobs "batch-finops").enabled }}
  - name: ROSETTA_BATCH_QUEUE_EXPIRY_SECONDS
    value: {{ include "rosetta.queueExpirySeconds" . | quote }}
  {{- end }}
  {{- with .Values.oidcIssuers }}
  - name: ROSETTA_OIDC_ISSUERS
    value: {{ toJson . | quote }}
  {{- end }}
  {{- with .Values.groupRoles }}
  - name: ROSETTA_GROUP_ROLES
    value: {{ toJson . | quote }}
  {{- end }}
  {{- range $name, $value := .Values.extraEnv }}
  - name: {{ $name }}
    value: {{ $value | toString | quote }}
  {{- end }}
  {{- with $.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
envFrom:
  - secretRef:
      name: {{ required "secrets.databases: name the Secret holding the ROSETTA_*_DATABASE_URL variables" .Values.secrets.databases }}
  {{- with .Values.secrets.externalSystems }}
  - secretRef:
      name: {{ . }}
  {{- end }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}
{{- end -}}

{{/* A run-to-completion pod: retried only when the exit code says the cause may pass (4: unavailable). */}}
{{- define "rosetta.jobSpec" -}}
{{- $root := .root -}}
backoffLimit: {{ .job.backoffLimit }}
activeDeadlineSeconds: {{ .job.activeDeadlineSeconds }}
{{- with .job.ttlSecondsAfterFinished }}
ttlSecondsAfterFinished: {{ . }}
{{- end }}
podFailurePolicy:
  rules:
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
    - action: FailJob
      onExitCodes:
        containerName: rosetta
        operator: In
        values: [1, 2, 3]
template:
  metadata:
    labels:
      {{- include "rosetta.labels" (dict "root" $root "component" .component) | nindent 6 }}
    {{- with $root.Values.podAnnotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    restartPolicy: Never
    {{- include "rosetta.podSpec" (dict "root" $root "serviceAccountName" .serviceAccountName) | nindent 4 }}
    containers:
      - name: rosetta
        args:
          {{- toYaml .job.args | nindent 10 }}
        {{- include "rosetta.container" (dict "root" $root "env" list) | nindent 8 }}
        resources:
          {{- toYaml .job.resources | nindent 10 }}
{{- end -}}
