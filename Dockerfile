# syntax=docker/dockerfile:1
# Build stage: the same static build as `make build`.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY internal ./internal
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/oidc-authservice ./cmd/oidc-authservice

# Run stage: no shell, no package manager, non-root (uid 65532).
FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/oidc-authservice /oidc-authservice
USER nonroot:nonroot
EXPOSE 8080 8081 8082
ENTRYPOINT ["/oidc-authservice"]
