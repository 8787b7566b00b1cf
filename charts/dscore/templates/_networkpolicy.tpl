{{/* Rules shared by the NetworkPolicies (networkpolicy.yaml). */}}

{{- define "dscore.np.dns" -}}
# DNS: the nodes find Kafka (and the Jobs the nodes) by name.
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end }}
{{- define "dscore.np.metricsFrom" -}}
{{- if .Values.networkPolicy.metricsFrom }}
{{- toYaml .Values.networkPolicy.metricsFrom }}
{{- else }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: monitoring
- podSelector:
    matchLabels:
      app.kubernetes.io/name: prometheus
{{- end }}
{{- end }}
{{- define "dscore.np.kafkaEgress" -}}
- ports:
    {{- range .Values.kafka.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- if .Values.kafka.dev.enabled }}
  to:
    - podSelector:
        matchLabels:
          {{- include "dscore.selectorLabels" (dict "ctx" . "component" "kafka") | nindent 10 }}
  {{- else if .Values.networkPolicy.kafkaTo }}
  to:
    {{- toYaml .Values.networkPolicy.kafkaTo | nindent 4 }}
  {{- end }}
{{- end }}
{{- define "dscore.np.apiServerEgress" -}}
# The Kubernetes API server (its address is not a pod's: any address, its ports only).
- ports:
    {{- range .Values.networkPolicy.apiServerPorts }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
