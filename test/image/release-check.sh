#!/usr/bin/env bash
# Checks that a release can be cut from this tree: VERSION is a version,
# CHANGELOG.md has its section, deploy/ pins the image to it (never :latest),
# and .github/workflows/release.yml builds the image from the Dockerfile for
# amd64 and arm64, signs it, publishes its digest (release notes, the asset
# IMAGE in the signed SHA256SUMS), and builds the release binaries. With TAG set
# (the release workflow), the tag must be VERSION.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "release-check: $*"; exit 1; }

version=$(tr -d '[:space:]' < VERSION)
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || fail "VERSION '$version' is not vMAJOR.MINOR.PATCH"
if [ -n "${TAG:-}" ] && [ "$TAG" != "$version" ]; then
	fail "tag $TAG is not VERSION $version"
fi
grep -q "^## \[${version#v}\]" CHANGELOG.md || fail "CHANGELOG.md has no section '## [${version#v}]'"
grep -q "newTag: $version\$" deploy/base/kustomization.yaml || fail "deploy/base pins another image version than $version"
# (make manifests-check also checks every rendered Deployment of the service.)
if grep -rn 'oidc-authservice/oidc-authservice:latest' deploy/ docs/ README.md; then
	fail "the image is referenced as :latest"
fi

wf=.github/workflows/release.yml
for want in 'file: Dockerfile' 'platforms: linux/amd64,linux/arm64' 'build-args: VERSION=${{ github.ref_name }}' \
	'cosign sign --yes' 'id-token: write' 'make dist VERSION=${{ github.ref_name }}' 'make release-check' 'make image-check' \
	'digest: ${{ steps.build.outputs.digest }}' 'DIGEST: ${{ needs.image.outputs.digest }}' '> dist/IMAGE' 'sha256sum IMAGE >> SHA256SUMS' \
	'Pin it by digest'; do
	grep -qF "$want" "$wf" || fail "$wf lacks: $want"
done
grep -q '^FROM --platform=\$BUILDPLATFORM golang' Dockerfile || fail "the Dockerfile's build stage does not cross-compile on the build platform"
grep -q 'GOOS=${TARGETOS} GOARCH=${TARGETARCH}' Dockerfile || fail "the Dockerfile's build does not target TARGETOS/TARGETARCH"
for p in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64; do
	grep -q "DIST_PLATFORMS :=.*$p" Makefile || fail "make dist does not build $p"
done
echo "release-check OK: $version (CHANGELOG.md, deploy/, $wf)"
