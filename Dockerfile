# syntax=docker/dockerfile:1
# Build stage: the same static build as `make build`, cross-compiled on the
# builder's platform for the target's (docker buildx --platform
# linux/amd64,linux/arm64 in .github/workflows/release.yml). make
# image-check runs this stage's RUN lines without Docker.
#
# Both base images are pinned by digest (make image-check refuses a FROM
# without one), so a build uses exactly the toolchain and runtime that were
# reviewed, whatever the tags point to later. Update a pin deliberately:
#   docker buildx imagetools inspect golang:1.26 --format '{{.Manifest.Digest}}'
# (or crane digest), then commit the new digest with the tag beside it.
FROM --platform=$BUILDPLATFORM golang:1.26@sha256:3c3e25a4da13fd0478eed2df1eb35a0e667094a7124d3993a6a1d30f71c17e79 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY internal ./internal
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/oidc-authservice ./cmd/oidc-authservice

# Run stage: no shell, no package manager, non-root (uid 65532).
FROM gcr.io/distroless/static:nonroot@sha256:f7f8f729987ad0fdf6b05eeeae94b26e6a0f613bdf46feea7fc40f7bd72953e6
ARG VERSION=dev
LABEL org.opencontainers.image.title="oidc-authservice" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/oidc-authservice /oidc-authservice
USER nonroot:nonroot
EXPOSE 8080 8081 8082
ENTRYPOINT ["/oidc-authservice"]
