# syntax=docker/dockerfile:1
#
# stsproxy container image: a static binary on an empty base, no shell.
#
#   docker build -t stsproxy --build-arg VERSION=$(git describe --tags --always) .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=v0.1.0 \
#     -t registry.example.com/stsproxy:v0.1.0 --push .
#
# A multi-platform image needs --push (or Docker's containerd image store):
# the classic store cannot hold it.
#
# The build stage runs on the build machine's platform and cross-compiles for
# the target's (TARGETOS/TARGETARCH), so multi-arch builds need no emulation.
# deploy/image_test.go builds the same image as an OCI layout without Docker
# and checks it; keep the two in step (the test reads this file).

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
	go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/stsproxy ./cmd/stsproxy

FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="stsproxy" \
	org.opencontainers.image.description="Outbound HTTP proxy that attaches AWS STS web identity tokens" \
	org.opencontainers.image.source="https://github.com/stsauth/stsauth" \
	org.opencontainers.image.version="${VERSION}"
# CA roots as a file, where Go's crypto/x509 looks first on Linux. Mount
# another bundle and set SSL_CERT_FILE to trust private CAs.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/stsproxy /usr/local/bin/stsproxy
# 65532 is the conventional "nonroot" user of distroless images; numeric, so
# runAsNonRoot can check it without an /etc/passwd.
USER 65532:65532
# 8080: the proxy (--listen-addr); 9090: /healthz, /readyz and /metrics
# (--metrics-listen-addr).
EXPOSE 8080 9090
# The check sees the container's environment, not the proxy's arguments: move
# the admin listener with METRICS_LISTEN_ADDR rather than --metrics-listen-addr.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 CMD ["/usr/local/bin/stsproxy", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/stsproxy"]
