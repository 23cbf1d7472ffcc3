# syntax=docker/dockerfile:1
# Build stage: the same static build as `make build`, cross-compiled on the
# builder's platform for the target's (docker buildx --platform
# linux/amd64,linux/arm64 in .github/workflows/release.yml). make
# image-check runs this stage's RUN lines without Docker.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
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
FROM gcr.io/distroless/static:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="oidc-authservice" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/oidc-authservice /oidc-authservice
USER nonroot:nonroot
EXPOSE 8080 8081 8082
ENTRYPOINT ["/oidc-authservice"]
