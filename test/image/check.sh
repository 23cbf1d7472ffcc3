#!/usr/bin/env bash
# Checks the Dockerfile's build stage without a Docker engine: copies exactly
# what the build stage COPYs into an empty folder, runs its RUN lines there
# (ARG VERSION=ci), and checks that the binary is static, stamped and
# self-contained (it runs with no files around it).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/out"

# Every FROM names its image by digest (a tag alone may point elsewhere
# tomorrow), unless it names an earlier stage of this Dockerfile.
stages=()
while read -r line; do
	# shellcheck disable=SC2086
	set -- $line
	shift
	while [[ ${1:-} == --* ]]; do shift; done
	image=${1:-}
	if [[ " ${stages[*]} " != *" $image "* ]] && ! [[ $image =~ ^[^@[:space:]]+@sha256:[0-9a-f]{64}$ ]]; then
		echo "Dockerfile: '$line': the base image is not pinned by digest (image@sha256:<64 hex>)"; exit 1
	fi
	if [[ ${2:-} =~ ^[Aa][Ss]$ && -n ${3:-} ]]; then stages+=("$3"); fi
done < <(grep -E '^FROM ' Dockerfile)
[ "$(grep -cE '^FROM ' Dockerfile)" -ge 2 ] || { echo "Dockerfile: want a build stage and a run stage"; exit 1; }
echo "Dockerfile: every base image pinned by digest"

# The build stage: from the first FROM up to the second.
stage=$(awk '/^FROM /{n++} n==1' Dockerfile)

while read -r line; do
	# shellcheck disable=SC2086
	set -- ${line#COPY }
	dst=${!#}
	for src in "${@:1:$#-1}"; do
		case $dst in
		*/) cp -r "$src" "$work/src/$dst" ;;
		*) mkdir -p "$work/src/$(dirname "$dst")" && cp -r "$src" "$work/src/$dst" ;;
		esac
	done
done < <(echo "$stage" | grep -E '^COPY ' | grep -v -- '--from')

cd "$work/src"
export VERSION=ci
# The native build: TARGETOS and TARGETARCH empty, as on a builder of the
# target's platform.
while read -r line; do
	cmd=${line#RUN }
	cmd=${cmd//\/out\//$work/out/}
	echo "+ $cmd"
	bash -c "$cmd"
done < <(echo "$stage" | grep -E '^RUN ')
# The cross build of the release workflow (buildx on amd64 for arm64).
build=$(echo "$stage" | grep -E '^RUN .*go build' | sed 's/^RUN //')
cross=${build//\/out\/oidc-authservice/$work/out/oidc-authservice-arm64}
echo "+ TARGETOS=linux TARGETARCH=arm64 $cross"
TARGETOS=linux TARGETARCH=arm64 bash -c "$cross"
go version -m "$work/out/oidc-authservice-arm64" | grep -q 'GOARCH=arm64' || { echo "the cross build is not arm64"; exit 1; }

bin=$work/out/oidc-authservice
test -x "$bin" || { echo "the build stage made no $bin"; exit 1; }
if ldd "$bin" >/dev/null 2>&1; then
	echo "the binary is dynamically linked: distroless/static cannot run it"; exit 1
fi
go version -m "$bin" | grep -q 'CGO_ENABLED=0' || { echo "not built with CGO_ENABLED=0"; exit 1; }
go version -m "$bin" | grep -q -- '-trimpath=true' || { echo "not built with -trimpath"; exit 1; }
[ "$(cd / && "$bin" version)" = ci ] || { echo "version not stamped"; exit 1; }
(cd / && env -i "$bin" --help | grep -q OIDC_PROVIDER) || { echo "--help does not list the settings"; exit 1; }
echo "Dockerfile build stage OK: static, trimmed, version stamped, runs without files; cross-builds for arm64"
cd "$root"
# The laptop-side binaries of make dist build for darwin too.
GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 go build -trimpath -o /dev/null ./cmd/oidc-authservice
echo "darwin/arm64 build OK"
bash test/image/release-check.sh
