#!/usr/bin/env bash
# make run: a complete local setup on 127.0.0.1, wired the way Kubeflow wires it.
#
#   part                                       listens on                    setting (default)
#   Dex (our runner of the Dex library)        http://127.0.0.1:5556/dex     DEX_PORT (5556)
#   demo upstream (shows what it receives)     http://127.0.0.1:8090         UPSTREAM_PORT (8090)
#   oidc-authservice: check, probes, pages     :8080, :8081, :8082           SERVER_PORT, READINESS_PROBE_PORT, WEB_SERVER_PORT
#     and the gRPC check                       :9000                         GRPC_PORT
#   Envoy-faithful gateway                     http://127.0.0.1:8000         GATEWAY_PORT (8000)
#     the Envoy configuration Istio generates for deploy/overlays/istio-envoyfilter
#     (test/istio/testdata/envoy/$LAYOUT.json): /dex/ → Dex, /authservice/ → the
#     service's pages, everything else → the demo upstream
#
# Each part is started only once the one before it answers (Dex first, so the
# service finds its provider at once) and checked before the next; "running"
# is printed only when all four answer. A part that fails is named with the
# last line of its log and the setting that fixes it; the exit status is then 1.
#
# Other settings: LAYOUT (the gateway's generated configuration,
# master_istio-envoyfilter; any of test/istio/testdata/envoy),
# DEMO_USER / DEMO_PASSWORD / DEMO_GROUPS (Dex's user), LOG_FORMAT (console),
# LOG_LEVEL (info), RUN_LOGS (the folder for this run's logs; default a new
# one under $TMPDIR), READY_TIMEOUT (seconds per part, 30), BIN (bin),
# KEY_FILE (the checkout's session key, $BIN/dev-session-key). Any variable of
# docs/configuration.md set in the environment reaches the service.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
DEX_PORT=${DEX_PORT:-5556}
UPSTREAM_PORT=${UPSTREAM_PORT:-8090}
GATEWAY_PORT=${GATEWAY_PORT:-8000}
SERVER_PORT=${SERVER_PORT:-8080}
READINESS_PROBE_PORT=${READINESS_PROBE_PORT:-8081}
WEB_SERVER_PORT=${WEB_SERVER_PORT:-8082}
GRPC_PORT=${GRPC_PORT:-9000}
LAYOUT=${LAYOUT:-master_istio-envoyfilter}
DEMO_USER=${DEMO_USER:-user@example.com}
DEMO_PASSWORD=${DEMO_PASSWORD:-12341234}
DEMO_GROUPS=${DEMO_GROUPS:-ml-engineers,kubeflow-admins}
READY_TIMEOUT=${READY_TIMEOUT:-30}

for tool in curl "$BIN/dex-runner" "$BIN/oidc-authservice" "$BIN/extauthz-proxy" "$BIN/demo-upstream"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "make run: $tool is missing (make run builds the programs in $BIN/; curl comes with your system's packages)" >&2
    exit 1
  fi
done

RUN_LOGS=${RUN_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/oidc-authservice-run.$(date +%Y%m%d-%H%M%S).XXXX")}
mkdir -p "$RUN_LOGS"

pids=()
names=()
logs=()
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "make run: stopped. Logs of this run: $RUN_LOGS"; cleanup; exit 130' INT TERM

# setting_of PORT: the variable that sets PORT.
setting_of() {
  case "$1" in
    "$GATEWAY_PORT") echo GATEWAY_PORT ;;
    "$DEX_PORT") echo DEX_PORT ;;
    "$UPSTREAM_PORT") echo UPSTREAM_PORT ;;
    "$SERVER_PORT") echo SERVER_PORT ;;
    "$READINESS_PROBE_PORT") echo READINESS_PROBE_PORT ;;
    "$WEB_SERVER_PORT") echo WEB_SERVER_PORT ;;
    "$GRPC_PORT") echo GRPC_PORT ;;
  esac
}

# free_port_after PORT: the first port above PORT nothing listens on.
free_port_after() {
  local p=$(($1 + 1))
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

# fail NAME LOG WHY: name the part that failed, its log line and what fixes it; exit 1.
fail() {
  local name=$1 log=$2 why=$3 port setting
  {
    echo
    echo "make run: $name did not start: $why."
    if [ -s "$log" ]; then
      echo "  The last lines of its log ($log):"
      tail -n 3 "$log" | sed 's/^/    /'
    else
      echo "  Its log ($log) is empty."
    fi
    port=$(grep -oE '127\.0\.0\.1:[0-9]+: bind: address already in use' "$log" 2>/dev/null | head -n 1 | cut -d: -f2 || true)
    if [ -n "$port" ]; then
      setting=$(setting_of "$port")
      echo "  Port $port is taken by another program (lsof -nP -iTCP:$port -sTCP:LISTEN shows which; another make run?)."
      echo "  Fix: stop that program, or give $name another port: ${setting:-its port setting}=$(free_port_after "$port") make run"
    elif [ "$name" = "the service (oidc-authservice)" ]; then
      echo "  Fix: the settings it names above; bin/oidc-authservice check-config with the same environment explains each."
    fi
    echo "  Logs of this run: $RUN_LOGS"
  } >&2
  exit 1
}

# start NAME LOG COMMAND...: run COMMAND in the background, its output to LOG.
start() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  pids+=($!)
  names+=("$name")
  logs+=("$log")
}

# ready NAME LOG MARKER PROBE...: wait until LOG has MARKER (printed once the
# part listens) and PROBE succeeds, while the part's process lives.
ready() {
  local name=$1 log=$2 marker=$3 pid i deadline=$((SECONDS + READY_TIMEOUT)) status
  shift 3
  for i in "${!names[@]}"; do
    if [ "${names[$i]}" = "$name" ]; then pid=${pids[$i]}; fi
  done
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      status=0
      wait "$pid" 2>/dev/null || status=$?
      fail "$name" "$log" "it exited with status $status"
    fi
    if grep -q -- "$marker" "$log" 2>/dev/null && "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      fail "$name" "$log" "it did not answer within $READY_TIMEOUT s (READY_TIMEOUT)"
    fi
    sleep 0.2
  done
}

expect() { # URL PATTERN: the answer at URL matches PATTERN
  curl -sS --max-time 2 "$1" | grep -q -- "$2"
}
expect_status() { # URL STATUS-AND-LOCATION-PATTERN, without following redirects
  curl -sS --max-time 2 -o /dev/null -w '%{http_code} %{redirect_url}' "$1" | grep -q -- "$2"
}

ISSUER=http://127.0.0.1:$DEX_PORT/dex
GATEWAY=http://127.0.0.1:$GATEWAY_PORT

# A client secret of this run only (Dex keeps its clients in memory), so that
# no published secret is in use.
CLIENT_SECRET=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
start "Dex" "$RUN_LOGS/dex.log" "$BIN/dex-runner" -addr "127.0.0.1:$DEX_PORT" -issuer "$ISSUER" -client-secret "$CLIENT_SECRET" \
  -redirect-uri /authservice/oidc/callback -user "$DEMO_USER" -password "$DEMO_PASSWORD" -groups "$DEMO_GROUPS"
start "the demo upstream" "$RUN_LOGS/upstream.log" "$BIN/demo-upstream" -listen "127.0.0.1:$UPSTREAM_PORT"
ready "Dex" "$RUN_LOGS/dex.log" "dex-runner ready" expect "$ISSUER/.well-known/openid-configuration" "\"issuer\": *\"$ISSUER\""
ready "the demo upstream" "$RUN_LOGS/upstream.log" "demo-upstream listening" \
  expect "http://127.0.0.1:$UPSTREAM_PORT/?format=json" '"headers"'

# The development session key of this checkout: drawn once and kept in
# $BIN/dev-session-key (git-ignored), so that restarts keep sessions and no
# key is ever published. SESSION_KEYS set in the environment wins.
KEY_FILE=${KEY_FILE:-$BIN/dev-session-key}
if [ ! -s "$KEY_FILE" ]; then
  mkdir -p "$(dirname "$KEY_FILE")"
  (umask 077 && head -c 32 /dev/urandom | base64 >"$KEY_FILE")
fi
# Kubeflow's params.env values.
export OIDC_PROVIDER=$ISSUER
export OIDC_AUTH_URL=/dex/auth
export CLIENT_ID=kubeflow-oidc-authservice
export CLIENT_SECRET
export REDIRECT_URL=/authservice/oidc/callback
export OIDC_SCOPES="profile email groups"
export AUTHSERVICE_URL_PREFIX=/authservice/
export SKIP_AUTH_URLS=/dex
export SERVER_HOSTNAME=127.0.0.1
export SERVER_PORT READINESS_PROBE_PORT WEB_SERVER_PORT GRPC_PORT
export SESSION_KEYS=${SESSION_KEYS:-$(cat "$KEY_FILE")}
export LOG_FORMAT=${LOG_FORMAT:-console}
export LOG_LEVEL=${LOG_LEVEL:-info}
# The service's log goes to the terminal and to the run's folder.
"$BIN/oidc-authservice" > >(tee -a "$RUN_LOGS/service.log") 2>&1 &
pids+=($!)
names+=("the service (oidc-authservice)")
logs+=("$RUN_LOGS/service.log")
ready "the service (oidc-authservice)" "$RUN_LOGS/service.log" "starting" \
  expect "http://127.0.0.1:$READINESS_PROBE_PORT/readyz" "ready"

start "the gateway (extauthz-proxy)" "$RUN_LOGS/gateway.log" "$BIN/extauthz-proxy" -listen "127.0.0.1:$GATEWAY_PORT" \
  -layout "$LAYOUT" -check "http://127.0.0.1:$SERVER_PORT" -web "http://127.0.0.1:$WEB_SERVER_PORT" \
  -dex "http://127.0.0.1:$DEX_PORT" -upstream "http://127.0.0.1:$UPSTREAM_PORT"
# Through the gateway: Dex's discovery (a route the check lets pass) and a
# page, which the check sends to Dex's login.
ready "the gateway (extauthz-proxy)" "$RUN_LOGS/gateway.log" "extauthz-proxy listening" \
  expect_status "$GATEWAY/" "^302 $GATEWAY/dex/auth?"
expect "$GATEWAY/dex/.well-known/openid-configuration" "\"issuer\": *\"$ISSUER\"" ||
  fail "the gateway (extauthz-proxy)" "$RUN_LOGS/gateway.log" "it does not route /dex/ to Dex"

part() { printf '    %-18s %-46s %-22s %s\n' "$@"; }
{
  echo
  echo "  oidc-authservice is running behind an Envoy-faithful gateway: Dex, the service, the demo"
  echo "  upstream and the gateway all answered."
  echo
  echo "    Open      $GATEWAY/?hello=world"
  echo "    Log in    $DEMO_USER / $DEMO_PASSWORD   (groups: $DEMO_GROUPS)"
  echo "    Log out   $GATEWAY/authservice/logout"
  echo
  part "part" "address" "port setting" "log in $RUN_LOGS"
  part "Dex" "$ISSUER" "DEX_PORT" "dex.log"
  part "demo upstream" "http://127.0.0.1:$UPSTREAM_PORT" "UPSTREAM_PORT" "upstream.log"
  part "oidc-authservice" "check :$SERVER_PORT probes :$READINESS_PROBE_PORT pages :$WEB_SERVER_PORT" "SERVER_PORT," "service.log (and below)"
  part "" "gRPC check :$GRPC_PORT" "READINESS_PROBE_PORT," ""
  part "" "" "WEB_SERVER_PORT," ""
  part "" "" "GRPC_PORT" ""
  part "gateway" "$GATEWAY" "GATEWAY_PORT" "gateway.log"
  part "" "(LAYOUT=$LAYOUT)" "" ""
  echo
  echo "  The service's log follows (LOG_FORMAT=$LOG_FORMAT, LOG_LEVEL=$LOG_LEVEL). Stop with Ctrl-C."
  echo
}

# Until Ctrl-C, or until a part stops: then name it, with its last log line.
while :; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      status=0
      wait "${pids[$i]}" 2>/dev/null || status=$?
      {
        echo
        echo "make run: ${names[$i]} stopped (exit status $status). The last lines of its log (${logs[$i]}):"
        tail -n 3 "${logs[$i]}" | sed 's/^/    /'
        echo "  Logs of this run: $RUN_LOGS"
      } >&2
      exit 1
    fi
  done
  sleep 1
done
