#!/usr/bin/env bash
# Starts a complete local setup on 127.0.0.1, the way Kubeflow wires it:
#   Dex (our runner of the Dex library)        :5556  issuer http://127.0.0.1:5556/dex
#   oidc-authservice                           :8080 check, :8081 probes, :8082 pages
#   demo upstream (shows the headers it got)   :9000
#   Envoy-faithful ext_authz proxy (gateway)   :8000  /dex/ → Dex, /authservice/site/ → :8082, / → upstream
# Open http://127.0.0.1:8000/ and log in as user@example.com / 12341234.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
GATEWAY_PORT=${GATEWAY_PORT:-8000}
MODE=${MODE:-kubeflow-envoyfilter-corrected}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# A client secret of this run only (Dex keeps its clients in memory), so that
# no published secret is in use.
CLIENT_SECRET=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
"$BIN/dex-runner" -addr 127.0.0.1:5556 -issuer http://127.0.0.1:5556/dex \
  -client-secret "$CLIENT_SECRET" -redirect-uri /authservice/oidc/callback >/tmp/oidc-authservice-dex.log 2>&1 &
pids+=($!)
"$BIN/demo-upstream" -listen 127.0.0.1:9000 >/tmp/oidc-authservice-upstream.log 2>&1 &
pids+=($!)

# The development session key of this checkout: drawn once and kept in
# $BIN/dev-session-key (git-ignored), so that restarts keep sessions and no
# key is ever published. SESSION_KEYS set in the environment wins.
KEY_FILE=${KEY_FILE:-$BIN/dev-session-key}
if [ ! -s "$KEY_FILE" ]; then
  mkdir -p "$(dirname "$KEY_FILE")"
  (umask 077 && head -c 32 /dev/urandom | base64 >"$KEY_FILE")
fi
# Kubeflow's params.env values.
export OIDC_PROVIDER=http://127.0.0.1:5556/dex
export OIDC_AUTH_URL=/dex/auth
export CLIENT_ID=kubeflow-oidc-authservice
export CLIENT_SECRET
export REDIRECT_URL=/authservice/oidc/callback
export OIDC_SCOPES="profile email groups"
export AUTHSERVICE_URL_PREFIX=/authservice/
export SKIP_AUTH_URLS=/dex
export SERVER_HOSTNAME=127.0.0.1
export SESSION_KEYS=${SESSION_KEYS:-$(cat "$KEY_FILE")}
export LOG_LEVEL=${LOG_LEVEL:-info}
"$BIN/oidc-authservice" &
pids+=($!)

"$BIN/extauthz-proxy" -listen 127.0.0.1:$GATEWAY_PORT -check http://127.0.0.1:8080 -mode "$MODE" \
  -route /dex/=http://127.0.0.1:5556 -route /authservice/site/=http://127.0.0.1:8082 \
  -upstream http://127.0.0.1:9000 >/tmp/oidc-authservice-proxy.log 2>&1 &
pids+=($!)

for i in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8081/readyz >/dev/null 2>&1 && break
  sleep 0.2
done
cat <<MSG

  oidc-authservice is running behind an Envoy-faithful gateway.

    Open      http://127.0.0.1:$GATEWAY_PORT/?hello=world
    Log in    user@example.com / 12341234
    Log out   http://127.0.0.1:$GATEWAY_PORT/authservice/logout

  Logs: the service logs here; Dex, proxy and upstream log to /tmp/oidc-authservice-*.log
  Stop with Ctrl-C.

MSG
wait -n "${pids[@]}"
