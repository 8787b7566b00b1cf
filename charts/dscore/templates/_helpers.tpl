{{/* Names ------------------------------------------------------------------------------------------ */}}

{{- define "dscore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's base name. Never truncated: a cut name could make two releases' objects (and node ids, and
Kafka topics) collide, so a name that does not fit fails instead (dscore.checkNames).
*/}}
{{- define "dscore.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride -}}
{{- else if contains (include "dscore.name" .) .Release.Name -}}
{{- .Release.Name -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "dscore.name" .) -}}
{{- end -}}
{{- end -}}

{{- define "dscore.nodeName" -}}{{ include "dscore.fullname" . }}-node{{- end -}}
{{- define "dscore.headlessName" -}}{{ include "dscore.fullname" . }}-node-peers{{- end -}}
{{- define "dscore.gatewayName" -}}{{ include "dscore.fullname" . }}-gateway{{- end -}}
{{- define "dscore.chaosName" -}}{{ include "dscore.fullname" . }}-chaos{{- end -}}
{{- define "dscore.kafkaName" -}}{{ include "dscore.fullname" . }}-kafka{{- end -}}
{{- define "dscore.membershipName" -}}{{ include "dscore.fullname" . }}-membership{{- end -}}
{{- define "dscore.topologyName" -}}{{ include "dscore.fullname" . }}-topology{{- end -}}
{{- define "dscore.nodeIdsName" -}}{{ include "dscore.fullname" . }}-node-ids{{- end -}}
{{- define "dscore.scriptsName" -}}{{ include "dscore.fullname" . }}-scripts{{- end -}}

{{/*
Fail early, with the reason, on names Kubernetes or dscore would refuse later. A StatefulSet's pods carry
the label controller-revision-hash=<name>-<10 characters>, at most 63: so its name is at most 52. Node ids
(the pod names) must be 1-63 letters, digits, '_', '.', '-' and fit Kafka topic names.
*/}}
{{- define "dscore.checkNames" -}}
{{- $sts := include "dscore.nodeName" . -}}
{{- if gt (len $sts) 52 -}}
{{- fail (printf "the nodes' StatefulSet name %q is %d characters; at most 52 are allowed (its pods' names are the node ids): use a shorter release name or set fullnameOverride" $sts (len $sts)) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" (include "dscore.fullname" .)) -}}
{{- fail (printf "fullnameOverride %q must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit" (include "dscore.fullname" .)) -}}
{{- end -}}
{{- $id := include "dscore.clusterId" . -}}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$" $id) -}}
{{- fail (printf "the cluster id %q must be 1-63 letters, digits, '_', '.', '-' (not first): set cluster.id" $id) -}}
{{- end -}}
{{- end -}}

{{/* The cluster id: cluster.id, or <namespace>.<release> */}}
{{- define "dscore.clusterId" -}}
{{- default (printf "%s.%s" .Release.Namespace .Release.Name) .Values.cluster.id -}}
{{- end -}}

{{/* The Prometheus job of the nodes and of the gateway: the rules select job=~".*dscore.*". */}}
{{- define "dscore.jobName" -}}
{{- $full := include "dscore.fullname" . -}}
{{- if contains "dscore" $full -}}{{ $full }}{{- else -}}dscore-{{ $full }}{{- end -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------------------------- */}}

{{- define "dscore.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "dscore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dscore
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "node") */}}
{{- define "dscore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dscore.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dscore.componentLabels" -}}
{{ include "dscore.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images: (dict "ctx" $ "image" .Values.node.image) */}}
{{- define "dscore.image" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}{{- $repo = printf "%s/%s" .image.registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Scheduling shared by every pod: (dict "ctx" $ "spec" .Values.gateway) */}}
{{- define "dscore.scheduling" -}}
{{- $nodeSelector := .spec.nodeSelector | default .ctx.Values.nodeSelector -}}
{{- $tolerations := .spec.tolerations | default .ctx.Values.tolerations -}}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Auth secret -------------------------------------------------------------------------------------- */}}

{{- define "dscore.authSecretName" -}}
{{- default (printf "%s-auth" (include "dscore.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "dscore.authSecretKey" -}}
{{- if .Values.auth.existingSecret -}}{{ .Values.auth.existingSecretKey }}{{- else -}}auth-key{{- end -}}
{{- end -}}

{{/* The key of the nodes' /admin token: auth.existingSecretAdminTokenKey names one of your Secret's. */}}
{{- define "dscore.adminTokenKey" -}}
{{- if .Values.auth.existingSecret -}}{{ .Values.auth.existingSecretAdminTokenKey }}{{- else -}}admin-token{{- end -}}
{{- end -}}

{{/* The nodes' /admin bearer token, from the same Secret. */}}
{{- define "dscore.adminTokenEnv" -}}
- name: DSCORE_HTTP__ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "dscore.authSecretName" . }}
      key: {{ include "dscore.adminTokenKey" . }}
{{- end -}}

{{/* The key of the chaos service's API token: auth.existingSecretChaosTokenKey names one of your Secret's. */}}
{{- define "dscore.chaosTokenKey" -}}
{{- if .Values.auth.existingSecret -}}{{ .Values.auth.existingSecretChaosTokenKey }}{{- else -}}chaos-token{{- end -}}
{{- end -}}

{{/* The chaos service's API bearer token (DSCORE_CHAOS__API_TOKEN), from the same Secret. */}}
{{- define "dscore.chaosTokenEnv" -}}
- name: DSCORE_CHAOS__API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "dscore.authSecretName" . }}
      key: {{ include "dscore.chaosTokenKey" . }}
{{- end -}}

{{/* Kafka ---------------------------------------------------------------------------------------------- */}}

{{- define "dscore.kafkaBootstrap" -}}
{{- if .Values.kafka.bootstrapServers -}}
{{- .Values.kafka.bootstrapServers -}}
{{- else if .Values.kafka.dev.enabled -}}
{{- printf "%s.%s.svc:9092" (include "dscore.kafkaName" .) .Release.Namespace -}}
{{- else -}}
{{- fail "kafka.bootstrapServers is required (host:port of your Kafka brokers), or set kafka.dev.enabled=true for a development broker in the release" -}}
{{- end -}}
{{- end -}}

{{/* Members ------------------------------------------------------------------------------------------- */}}

{{/* Node ids of ordinals 0..replicas-1 as written at first start (before any generation renaming). */}}
{{- define "dscore.memberIds" -}}
{{- $sts := include "dscore.nodeName" . -}}
{{- $ids := list -}}
{{- range $i := until (int .Values.node.replicas) -}}
{{- $ids = append $ids (printf "%s-%d" $sts $i) -}}
{{- end -}}
{{- join "," $ids -}}
{{- end -}}

{{/*
f, the Byzantine replicas a pbft cluster of node.replicas tolerates, as the nodes work it out
(dscore.settings.PbftSettings.tolerated): DSCORE_PBFT__FAULTS_TOLERATED when node.extraEnv sets it (a
literal value; the chart cannot read a valueFrom), else the most n allows, floor((n - 1) / 3). Fails when
n < 3f + 1, which the nodes would refuse at start.
*/}}
{{- define "dscore.pbftFaults" -}}
{{- $n := int .Values.node.replicas -}}
{{- $f := div (sub $n 1) 3 -}}
{{- range .Values.node.extraEnv -}}
{{- if and (eq (toString .name) "DSCORE_PBFT__FAULTS_TOLERATED") (hasKey . "value") -}}
{{- $f = int .value -}}
{{- end -}}
{{- end -}}
{{- if lt $n (add (mul 3 $f) 1) -}}
{{- fail (printf "cluster.protocol=pbft needs n >= 3f + 1 members: DSCORE_PBFT__FAULTS_TOLERATED=%d needs at least %d, node.replicas is %d" $f (add (mul 3 $f) 1) $n) -}}
{{- end -}}
{{- $f -}}
{{- end -}}

{{/*
The quorum the protocol needs to make progress: for raft and paxos a majority of the n members,
floor(n / 2) + 1; for pbft n - f (PbftNode.quorum), f as in dscore.pbftFaults.
*/}}
{{- define "dscore.quorum" -}}
{{- $n := int .Values.node.replicas -}}
{{- if eq .Values.cluster.protocol "pbft" -}}
{{- sub $n (int (include "dscore.pbftFaults" .)) -}}
{{- else -}}
{{- add (div $n 2) 1 -}}
{{- end -}}
{{- end -}}

{{/* Members that may fail (or, with pbft, be Byzantine) while the others keep a quorum. */}}
{{- define "dscore.toleratedFailures" -}}
{{- sub (int .Values.node.replicas) (int (include "dscore.quorum" .)) -}}
{{- end -}}

{{/*
Replicas of the running StatefulSet (empty when it does not exist, or when the chart is rendered without a
cluster: helm template, --dry-run=client, GitOps tools).
*/}}
{{- define "dscore.runningReplicas" -}}
{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "dscore.nodeName" .) -}}
{{- if $sts -}}{{- $sts.spec.replicas -}}{{- end -}}
{{- end -}}

{{/*
Only raft changes its membership at run time: paxos and pbft run the fixed set of members they were
installed with (a pbft replica never reports role "leader", which the membership Job waits for; a paxos
node answers a change with 409 "unsupported"). So an upgrade that would change the running replica count
of such a cluster fails here, whether or not the membership Jobs are on.
*/}}
{{- define "dscore.checkReplicaChange" -}}
{{- $running := include "dscore.runningReplicas" . -}}
{{- if and $running (ne .Values.cluster.protocol "raft") (ne (int $running) (int .Values.node.replicas)) -}}
{{- $sts := include "dscore.nodeName" . -}}
{{- fail (printf "cluster.protocol=%s runs a fixed set of members (only raft changes its membership at run time): node.replicas=%d differs from the %s replicas of the running StatefulSet %s. Set node.replicas=%s again; or, if it is the StatefulSet that was scaled by hand, scale it back: kubectl -n %s scale statefulset %s --replicas=%d. A cluster of another size is a new release." .Values.cluster.protocol (int .Values.node.replicas) $running $sts $running .Release.Namespace $sts (int .Values.node.replicas)) -}}
{{- end -}}
{{- end -}}

{{/*
Founding members: how many ordinals started the cluster (they start with DSCORE_INITIAL_CLUSTER_STATE=new;
later ordinals join an existing cluster). Kept in the topology ConfigMap from the first install on.
*/}}
{{- define "dscore.foundingMembers" -}}
{{- $cm := lookup "v1" "ConfigMap" .Release.Namespace (include "dscore.topologyName" .) -}}
{{- if and $cm $cm.data (hasKey $cm.data "founding-members") -}}
{{- index $cm.data "founding-members" -}}
{{- else if .Release.IsInstall -}}
{{- .Values.node.replicas -}}
{{- else -}}
{{- $running := include "dscore.runningReplicas" . -}}
{{- default .Values.node.replicas $running -}}
{{- end -}}
{{- end -}}

{{/* Pod security -------------------------------------------------------------------------------------- */}}
{{- define "dscore.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end -}}

{{/* Environment every dscore process shares: the cluster id, the key, Kafka. */}}
{{- define "dscore.commonEnv" -}}
- name: DSCORE_CLUSTER_ID
  value: {{ include "dscore.clusterId" . | quote }}
- name: DSCORE_AUTH_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "dscore.authSecretName" . }}
      key: {{ include "dscore.authSecretKey" . }}
- name: DSCORE_KAFKA__BOOTSTRAP_SERVERS
  value: {{ include "dscore.kafkaBootstrap" . | quote }}
{{- end -}}

{{/* The nodes' environment: commonEnv and the cluster-wide settings that are set. */}}
{{- define "dscore.clusterEnv" -}}
{{ include "dscore.commonEnv" . }}
- name: DSCORE_PROTOCOL
  value: {{ .Values.cluster.protocol | quote }}
{{- $c := .Values.cluster }}
{{- /* Integers printed as integers (values arrive as float64: %v would print 4194304 as 4.194304e+06). */}}
{{- range $name, $value := dict "DSCORE_MAX_SESSIONS" $c.maxSessions "DSCORE_MAX_ENVELOPE_BYTES" $c.maxEnvelopeBytes "DSCORE_RAFT__ELECTION_TIMEOUT_TICKS" $c.raft.electionTimeoutTicks "DSCORE_RAFT__HEARTBEAT_TICKS" $c.raft.heartbeatTicks "DSCORE_RAFT__LEASE_TICKS" $c.raft.leaseTicks }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ int64 $value | toString | quote }}
{{- end }}
{{- end }}
{{- range $name, $value := dict "DSCORE_TICK_INTERVAL_S" $c.tickIntervalS "DSCORE_RAFT__PRE_VOTE" $c.raft.preVote "DSCORE_RAFT__CHECK_QUORUM" $c.raft.checkQuorum "DSCORE_RAFT__READ_ONLY_OPTION" $c.raft.readOnlyOption }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Tilt's live update (development.sourceOverlay): (dict "ctx" $ "service" "node") */}}
{{- define "dscore.overlayEnv" -}}
{{- if .ctx.Values.development.sourceOverlay -}}
- name: PYTHONPATH
  value: {{ printf "/opt/dscore-src/libs/dscore/src:/opt/dscore-src/services/%s/src" .service | quote }}
{{- end }}
{{- end -}}
{{- define "dscore.overlayMount" -}}
{{- if .Values.development.sourceOverlay -}}
- name: source-overlay
  mountPath: /opt/dscore-src
{{- end }}
{{- end -}}
{{- define "dscore.overlayVolume" -}}
{{- if .Values.development.sourceOverlay -}}
- name: source-overlay
  emptyDir: {}
{{- end }}
{{- end -}}
