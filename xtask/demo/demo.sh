#!/bin/sh
# belay demo, run by `cargo xtask demo`: natively on a host with BPF LSM, otherwise in a
# QEMU VM on a Debian kernel that has it. POSIX sh (busybox ash inside the VM).
#
# Story: an "AI agent" (a shell script) is started under belay. Its every exec and
# connect is held in the kernel until a reviewer decides with the `belay` CLI. Here the
# script plays the reviewer too, so the demo runs unattended.
set -eu

SOCK=${BELAY_DEMO_SOCKET:-/run/belay/demo.sock}
LOG=/tmp/belay-agent.log
WORK=$(mktemp -d)
export BELAY_SOCKET="$SOCK"
# The demo's pinned maps and links, apart from a production belay-agent's.
export BELAY_PIN_DIR=/sys/fs/bpf/belay-demo

say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# Waits until a request is pending and prints its id.
next_request() {
    i=0
    while [ $i -lt 300 ]; do
        id=$(belay pending --output json | sed -n 's/.*"id": \([0-9][0-9]*\).*/\1/p' | head -n 1)
        if [ -n "$id" ]; then
            echo "$id"
            return 0
        fi
        i=$((i + 1))
        sleep 0.1
    done
    echo "demo: no request became pending within 30 s" >&2
    cat "$LOG" >&2
    return 1
}

# Waits until the belay-agent just started ($AGENT_PID) answers on $SOCK.
wait_for_agent() {
    i=0
    until [ -S "$SOCK" ] && belay status >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 "$AGENT_PID" 2>/dev/null; then
            echo "demo: belay-agent did not start:" >&2
            cat "$LOG" >&2
            exit 1
        fi
        sleep 0.1
    done
}

state_of() { sed -n 's/^State:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null || echo gone; }

cleanup() {
    [ -n "${AGENT_PID:-}" ] && kill "$AGENT_PID" 2>/dev/null || true
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -n "${HTTPD_PID:-}" ] && kill "$HTTPD_PID" 2>/dev/null || true
    rm -rf "$WORK"
    rm -rf /sys/fs/bpf/belay-demo
}
trap cleanup EXIT

say "belay demo on $(uname -r) (${BELAY_DEMO_MODE:-native}); active LSMs: $(cat /sys/kernel/security/lsm)"

# A small internal service the agent wants to reach.
mkdir -p "$WORK/www"
echo "quarterly numbers: 42" > "$WORK/www/index.html"
busybox httpd -f -p 127.0.0.1:8080 -h "$WORK/www" &
HTTPD_PID=$!

say "The policy: which processes are agents, and what a person must approve"
cat >"$WORK/policy.yaml" <<'EOF'
version: 1
defaults: {deadline: 2m, on_timeout: deny}
subjects:
  - name: demo-agent
    owner: alice@example.com
    match: {enrolled: true}      # processes started with `belay run`
    default: ask                 # anything no rule names: ask a person
    egress:
      - {name: internal-api, to: [127.0.0.1], ports: [8080], protocol: tcp, action: ask}
      - {name: no-private-nets, to: [10.0.0.0/8, 192.168.0.0/16], action: deny}
EOF
sed 's/^/    /' "$WORK/policy.yaml"
run belay-agent --check-policy "$WORK/policy.yaml"

say "Starting belay-agent (standalone: decisions are taken on this host)"
belay-agent --socket "$SOCK" --policy "$WORK/policy.yaml" 2>"$LOG" &
AGENT_PID=$!
wait_for_agent
echo "belay-agent is up (pid $AGENT_PID, socket $SOCK)"

# The agent runs as its own user (65534, nobody): the uid of a paused process may never
# decide its requests, so here root is the reviewer.
say "The AI agent starts under belay: belay run --uid 65534 -- sh -c 'wget http://127.0.0.1:8080/'"
belay run --uid 65534 --gid 65534 -- /bin/sh -c 'wget -q -O - http://127.0.0.1:8080/' >"$WORK/agent1.out" 2>&1 &
AGENT1=$!

id=$(next_request)
echo "The kernel stopped the agent before its first exec. Process $AGENT1 is: $(state_of "$AGENT1")"
run belay pending
run belay approve "$id" --reason "the agent's shell may start"

say "The shell now wants to run wget: held again"
id=$(next_request)
run belay show "$id"
run belay approve "$id" --reason "wget is fine"

say "wget wants to connect to 127.0.0.1:8080: held until a person decides"
id=$(next_request)
run belay pending
run belay approve "$id" --reason "the internal API is allowed"
wait "$AGENT1" || true
echo "What the agent got:"
sed 's/^/    /' "$WORK/agent1.out"

say "The agent tries again with its own copy of wget; this time the reviewer says no"
belay run --uid 65534 --gid 65534 -- wget -q -O - http://127.0.0.1:8080/ >"$WORK/agent2.out" 2>&1 &
AGENT2=$!
id=$(next_request)
run belay approve "$id" --reason "exec of wget"
id=$(next_request)
run belay show "$id"
run belay deny "$id" --reason "no exfiltration today"
status=0
wait "$AGENT2" || status=$?
echo "The agent's wget exited with status $status and said:"
sed 's/^/    /' "$WORK/agent2.out"

say "The agent reaches for a private network: the policy denies it in the kernel, nobody is asked"
belay run --uid 65534 --gid 65534 -- wget -q -O - http://10.1.2.3/ >"$WORK/agent3.out" 2>&1 &
AGENT3=$!
id=$(next_request)
run belay approve "$id" --reason "exec of wget"
status=0
wait "$AGENT3" || status=$?
echo "The agent's wget exited with status $status and said:"
sed 's/^/    /' "$WORK/agent3.out"

say "Counters"
run belay status

say "Stopping belay-agent (pending requests would end with the shutdown verdict, deny)"
kill "$AGENT_PID"
wait "$AGENT_PID" || true
AGENT_PID=
rm -f "$SOCK"
echo "belay-agent log:"
sed 's/^/    /' "$LOG"
# ---------------------------------------------------------------------------------------
say "Part 2: a central belay-server. Hosts send what needs a person; reviewers decide there"
SRV="$WORK/server"
mkdir -p "$SRV"
# A reviewer's API token (people sign in to the console with OIDC; scripts use tokens).
REVIEWER_TOKEN=$(belay-server api-token new 2>"$SRV/token-hash")
cat >"$SRV/auth.toml" <<EOF
[[api_token]]
name = "bob@example.com"
$(cat "$SRV/token-hash")
roles = ["reviewer"]
EOF
run belay-server check-config "$SRV/auth.toml"
CONSOLE=https://127.0.0.1:8443
belay-server --db "$SRV/server.db" --listen 127.0.0.1:50051 --http-listen 127.0.0.1:9090 \
    --auth-config "$SRV/auth.toml" --console-listen 127.0.0.1:8443 --console-url "$CONSOLE" \
    2>"$SRV/log" &
SERVER_PID=$!
i=0
until busybox wget -q -O /dev/null http://127.0.0.1:9090/readyz 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 300 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "demo: belay-server did not start:" >&2
        cat "$SRV/log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "belay-server is up: gRPC on 127.0.0.1:50051, reviewer console on $CONSOLE"

say "This host enrolls with a one-time token and the CA's fingerprint"
ENROLL_TOKEN=$(belay-server token create --ttl 10m --db "$SRV/server.db")
FINGERPRINT=$(belay-server ca fingerprint --db "$SRV/server.db")
run belay-agent enroll --server https://127.0.0.1:50051 --token "$ENROLL_TOKEN" \
    --ca-fingerprint "$FINGERPRINT" --cert-dir "$SRV/certs"
belay-agent --socket "$SOCK" --policy "$WORK/policy.yaml" --server https://127.0.0.1:50051 \
    --cert-dir "$SRV/certs" 2>"$LOG" &
AGENT_PID=$!
wait_for_agent
echo "belay-agent is up (pid $AGENT_PID), sending what needs a person to belay-server"

# The reviewer's CLI, pointed at the server (BELAY_TOKEN is its credential).
export BELAY_TOKEN="$REVIEWER_TOKEN"
REVIEW="belay --server https://127.0.0.1:50051 --server-ca $SRV/ca.pem"
# Waits until a request is pending on the server and prints its id.
next_server_request() {
    until=$(($(date +%s) + 60))
    while [ "$(date +%s)" -lt "$until" ]; do
        id=$($REVIEW pending --output json 2>/dev/null \
            | sed -n 's/^ *"id": "\([^"]*\)".*/\1/p' | head -n 1)
        if [ -n "$id" ]; then
            echo "$id"
            return 0
        fi
        sleep 0.2
    done
    echo "demo: no request became pending on belay-server within 60 s; the agent's and the server's logs:" >&2
    cat "$LOG" "$SRV/log" "$WORK/agent4.out" >&2
    return 1
}

# The AI agent says why it acts (`belay intent`); reviewers see it, labelled unverified.
belay run --uid 65534 --gid 65534 -- belay intent "check the status page the user asked about" \
    --model demo-llm -- /bin/sh -c 'wget -q -O - http://127.0.0.1:8080/' >"$WORK/agent4.out" 2>&1 &
AGENT4=$!
id=$(next_server_request)
run $REVIEW pending
run $REVIEW approve "$id" --reason "the agent may start"
say "The agent declared its intent: the request carries it, masked and marked unverified"
id=$(next_server_request)
run $REVIEW show "$id"
run $REVIEW approve "$id" --reason "the agent's shell may start"
id=$(next_server_request)
run $REVIEW approve "$id" --reason "wget is fine"

say "The connect is approved through the console's HTTP endpoint, as its Approve button does"
id=$(next_server_request)
# curl checks the console's certificate against the server's CA (ca.pem); a browser
# does the same once that CA is installed, or trusts a --console-cert of your own.
echo "GET $CONSOLE/api/requests/$id (what the request page shows):"
curl --silent --show-error --cacert "$SRV/ca.pem" -H "Authorization: Bearer $REVIEWER_TOKEN" \
    "$CONSOLE/api/requests/$id" | tr ',' '\n' | grep -E '"(summary|owner|rule|state)"' | sed 's/^/    /'
echo "POST $CONSOLE/api/requests/$id/decision"
curl --silent --show-error --fail-with-body --cacert "$SRV/ca.pem" \
    -H "Authorization: Bearer $REVIEWER_TOKEN" -H "Content-Type: application/json" \
    --data '{"verdict": "allow", "reason": "the internal API is allowed", "scope": "once"}' \
    "$CONSOLE/api/requests/$id/decision" | tr ',' '\n' | grep -E '"(state|reviewer|reason)"' | sed 's/^/    /'
wait "$AGENT4" || true
echo "What the agent got:"
sed 's/^/    /' "$WORK/agent4.out"
run $REVIEW show "$id"

say "Stopping; the server's audit log is intact"
kill "$AGENT_PID"
wait "$AGENT_PID" || true
AGENT_PID=
kill "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=
run belay-server audit verify --db "$SRV/server.db"
say "demo finished"
