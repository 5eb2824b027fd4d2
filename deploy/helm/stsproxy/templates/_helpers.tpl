{{/* The chart's name, overridable. */}}
{{- define "stsproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters (DNS label). The inbound
verifier's objects append "-inbound", so leave room for it. */}}
{{- define "stsproxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "stsproxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "stsproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the shared proxy's pods. */}}
{{- define "stsproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stsproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end }}

{{/* Selector labels of the inbound verifier's pods. */}}
{{- define "stsproxy.inboundSelectorLabels" -}}
app.kubernetes.io/name: {{ include "stsproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: inbound
{{- end }}

{{/* The shared proxy's service account. */}}
{{- define "stsproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stsproxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image, its tag defaulting to the chart's appVersion. */}}
{{- define "stsproxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Environment every stsproxy container gets: GOMEMLIMIT from its own
memory limit, so the Go runtime collects harder near the limit instead of
being OOM-killed at it. */}}
{{- define "stsproxy.goEnv" -}}
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
{{- end }}

{{/* The pods' annotations: podAnnotations, and with
metrics.scrapeAnnotations the prometheus.io ones for a Prometheus that
discovers pods by annotation, on the admin port (.port); the NetworkPolicy
admits the monitoring pods to it. */}}
{{- define "stsproxy.podAnnotations" -}}
{{- $ann := dict }}
{{- if .Values.metrics.scrapeAnnotations }}
{{- $_ := set $ann "prometheus.io/scrape" "true" }}
{{- $_ := set $ann "prometheus.io/port" (toString .port) }}
{{- $_ := set $ann "prometheus.io/path" .Values.metrics.path }}
{{- end }}
{{- $ann = mergeOverwrite $ann (.Values.podAnnotations | default dict) }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Egress rules for DNS, HTTPS on the given ports (anywhere but
link-local), and the EKS Pod Identity agent: nothing else on link-local,
in particular not the instance metadata service. */}}
{{- define "stsproxy.egressRules" -}}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except: [169.254.0.0/16]
    - ipBlock:
        cidr: ::/0
        except: ["fe80::/10", "fd00:ec2::/32"]
  ports:
    {{- range .httpsPorts }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- if .podIdentity }}
# The EKS Pod Identity agent, on every node (IPv4 and IPv6 clusters).
- to:
    - ipBlock:
        cidr: 169.254.170.23/32
    - ipBlock:
        cidr: fd00:ec2::23/128
  ports:
    - protocol: TCP
      port: 80
{{- end }}
{{- end }}

{{/* Checks the values the chart cannot default. */}}
{{- define "stsproxy.validate" -}}
{{- if not .Values.aws.region }}
{{- fail "aws.region is required: GetWebIdentityToken is served only by regional STS endpoints, such as us-east-1" }}
{{- end }}
{{- if not .Values.config.allowedHosts }}
{{- fail "config.allowedHosts is required: the upstream hosts tokens may be sent to (--allowed-hosts), exact or *.suffix" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.clientNamespaces) }}
{{- fail "networkPolicy.clientNamespaces is required while networkPolicy.enabled: the namespaces whose labelled pods may use the proxy" }}
{{- end }}
{{- if .Values.inbound.enabled }}
{{- if not .Values.inbound.upstream }}
{{- fail "inbound.upstream is required while inbound.enabled: the URL of the service to forward verified requests to" }}
{{- end }}
{{- if not .Values.inbound.issuers }}
{{- fail "inbound.issuers is required while inbound.enabled: https://<id>.tokens.sts.global.api.aws, one per AWS account" }}
{{- end }}
{{- if not .Values.inbound.audiences }}
{{- fail "inbound.audiences is required while inbound.enabled: the audiences the verifier accepts" }}
{{- end }}
{{- end }}
{{- end }}
