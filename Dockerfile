# syntax=docker/dockerfile:1.7
#
# One image with every fleetgate binary in /usr/local/bin (frontend, fleetgate-dev,
# and dispatcher/archiver once they exist). The image has no ENTRYPOINT: the
# compose `command:` or the Kubernetes `command:` names the binary, e.g.
#   docker run --rm fleetgate:dev frontend -help
#   docker run --rm fleetgate:dev fleetgate-dev
#
# Build: docker build -t fleetgate:dev .

ARG GO_VERSION=1.26

# The builder runs on the build machine's platform and cross-compiles, so a
# multi-platform build (--platform linux/amd64,linux/arm64) needs no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src

# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
ARG TARGETOS TARGETARCH
# ./cmd/... builds every main package under cmd/ (directories without Go files
# are skipped), so new binaries land in the image without editing this file.
# CGO_ENABLED=0: static binaries for the distroless static base.
# -trimpath: no build-machine paths in binaries or stack traces.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ ./cmd/...

# distroless static: no shell, no package manager, CA certificates and tzdata
# only; the :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot

LABEL org.opencontainers.image.title="fleetgate" \
      org.opencontainers.image.description="Kafka-backed stateless MQTT frontend" \
      org.opencontainers.image.source="https://github.com/fleetgate/fleetgate"

COPY --from=build /out/ /usr/local/bin/

# fleetgate-dev keeps its embedded Kafka data in a directory relative to the
# working directory; /home/nonroot is writable by the nonroot user.
WORKDIR /home/nonroot
USER 65532:65532

# MQTT over TCP, MQTT over TLS, MQTT over WebSocket, operations (/healthz, /readyz, /metrics).
EXPOSE 1883 8883 8083 9464

CMD ["/usr/local/bin/frontend"]
