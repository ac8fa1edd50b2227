# Run by `cargo xtask deploy-test` inside the VM (a kernel with BPF LSM): the belay-agent
# and belay binaries taken out of the Debian packages hold a watched process's connect
# until `belay deny`, which makes it fail with EPERM.
set -eu
export PATH=/opt/pkg/usr/bin:$PATH
echo "pkg-agent: $(command -v belay-agent), kernel $(uname -r), LSMs $(cat /sys/kernel/security/lsm)"
cat >/tmp/policy.yaml <<'POLICY'
version: 1
defaults: {deadline: 2m, on_timeout: deny}
subjects:
  - name: pkg-test
    owner: alice@example.com
    match: {enrolled: true}
    default: {exec: allow, egress: ask}
POLICY
mkdir -p /tmp/www /run/belay
echo hello > /tmp/www/index.html
busybox httpd -f -p 127.0.0.1:8080 -h /tmp/www &
belay-agent --policy /tmp/policy.yaml --socket /run/belay/agent.sock 2>/tmp/agent.log &
AGENT=$!
i=0
while [ ! -S /run/belay/agent.sock ]; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$AGENT" 2>/dev/null; then
        echo "pkg-agent: belay-agent did not start:"; cat /tmp/agent.log; exit 1
    fi
    sleep 0.1
done
belay run --uid 65534 --gid 65534 -- /bin/sh -c 'wget -q -O - http://127.0.0.1:8080/' >/tmp/wget.out 2>&1 &
WGET=$!
i=0
id=
while [ -z "$id" ]; do
    i=$((i + 1))
    if [ $i -gt 600 ]; then echo "pkg-agent: no request pending"; cat /tmp/agent.log; exit 1; fi
    sleep 0.1
    id=$(belay pending --output json | sed -n 's/.*"id": \([0-9][0-9]*\).*/\1/p' | head -n 1)
done
belay show "$id"
belay deny "$id" --reason "deploy-test"
rc=0
wait "$WGET" || rc=$?
echo "pkg-agent: wget exited $rc: $(cat /tmp/wget.out)"
if [ "$rc" -ne 0 ] && grep -q "Operation not permitted\|can't connect" /tmp/wget.out && ! grep -q hello /tmp/wget.out; then
    echo "PKG-AGENT: held and denied"
fi
kill "$AGENT"
wait "$AGENT" || true
