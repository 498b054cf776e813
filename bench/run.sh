#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through a trap or by name are reachable
# keygate benchmark: keygate against nginx and HAProxy doing the same job
# (check an API key, strip it, forward to one upstream) on 127.0.0.1.
#
#   make bench                               # or: bash bench/run.sh
#   DURATION=5s bash bench/run.sh            # shorter runs while iterating
#   KEYGATE=/path/to/keygate bash bench/run.sh
#
# Environment:
#   KEYGATE   keygate binary (default build/keygate, relative to the repo root)
#   DURATION  length of each measured wrk run (default 10s)
#   WARMUP    unmeasured wrk run before each measured one (default 2s; 0 = none)
#   ROUNDS    repeat every load run this many times, in rotation, and print
#             medians (default 1: one run per figure)
#   KEEP_TMP  1 = keep the temporary directory (configs, logs, raw wrk output)
#
# Every figure is printed; none is asserted. Exit 0 when everything ran, 1 when
# some part could not run (its figures then read n/a), 2 on a setup failure.
# See bench/README.md for what each figure means.

set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

KEYGATE=${KEYGATE:-build/keygate}
if [[ $KEYGATE != /* ]]; then
    if [[ -e $KEYGATE ]]; then KEYGATE=$(pwd)/$KEYGATE; else KEYGATE=$root/$KEYGATE; fi
fi
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-1}
KEEP_TMP=${KEEP_TMP:-0}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench: ROUNDS must be a positive integer" >&2; exit 2; }

CONNS=64           # wrk -c
IDLE_CONNS=1000    # idle keep-alive connections for the memory figure
NKEYS=100000       # hashed keys in the large keys file
BODY_BYTES=128     # upstream response body

failures=0
note_failure() { echo "bench: $*" >&2; failures=$((failures + 1)); }
die() { echo "bench: $*" >&2; exit 2; }

# ---------------------------------------------------------------- packages --

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_tools() {
    local need=() p
    for p in wrk nginx-light haproxy; do installed "$p" || need+=("$p"); done
    ((${#need[@]})) || return 0
    [[ $EUID -eq 0 ]] || die "missing packages (${need[*]}); run as root or install them"
    echo "bench: installing ${need[*]} from Debian" >&2
    # Keep the Debian services from starting during the install: a policy-rc.d
    # that answers 101 ("action forbidden") is honoured by invoke-rc.d and
    # deb-systemd-invoke. Reuse an existing one, else put ours in for the install.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
                    --no-install-recommends)
    local rc=0
    if ! DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${need[@]}" >"$tmp/apt.log" 2>&1; then
        # Stale or missing package lists: refresh once and try again.
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$tmp/apt.log" 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${need[@]}" >>"$tmp/apt.log" 2>&1 || rc=$?
    fi
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    if ((rc)); then tail -n 20 "$tmp/apt.log" >&2; die "apt-get install ${need[*]} failed"; fi
    # If a service started anyway (no policy honoured), stop it and keep it off.
    local svc pidf
    for svc in nginx haproxy; do
        for pidf in /run/$svc.pid /var/run/$svc.pid; do
            if [[ -s $pidf ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
                echo "bench: stopping the Debian $svc service the install started" >&2
                if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
                    systemctl disable --now "$svc" >/dev/null 2>&1
                else
                    invoke-rc.d "$svc" stop >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1
                fi
                break
            fi
        done
    done
}

# ------------------------------------------------------------ process care --

pids=()   # every process this script started and has not stopped yet, by id

# tree PID: the ids of PID's descendants, then PID
tree() {
    local c
    for c in $(pgrep -P "$1" 2>/dev/null); do tree "$c"; done
    echo "$1"
}

# stop_tree PID: TERM PID and its descendants, give them up to 5 s, then KILL
# what is left; PID is then forgotten.
stop_tree() {
    local all p alive i
    all=$(tree "$1")
    for p in $all; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 100); do
        alive=0
        for p in $all; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.05
    done
    for p in $all; do kill -KILL "$p" 2>/dev/null; done
    wait "$1" 2>/dev/null
    for i in "${!pids[@]}"; do [[ ${pids[$i]} == "$1" ]] && unset 'pids[i]'; done
    pids=("${pids[@]}")
}
stop_pid() { stop_tree "$1"; }

cleanup() {
    trap '' INT TERM
    local pid
    for pid in "${pids[@]}"; do stop_tree "$pid"; done
    if [[ -n ${tmp:-} && -d $tmp ]]; then
        if [[ $KEEP_TMP == 1 ]]; then echo "bench: kept $tmp" >&2; else rm -rf "$tmp"; fi
    fi
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT
trap 'echo "bench: terminated" >&2; exit 143' TERM

# in_background CMD...: run CMD as a child, wait for it so that a signal to this
# script is acted on at once (bash runs a trap only after a foreground command
# ends, and wrk ends normally on SIGINT), and return its exit status.
in_background() {
    local pid rc
    "$@" &
    pid=$!
    pids+=("$pid")
    wait "$pid"
    rc=$?
    stop_tree "$pid"
    return "$rc"
}

now() { echo "$EPOCHREALTIME"; }

# wait_port PORT [SECONDS] [PID]: wait until 127.0.0.1:PORT accepts a connection,
# at most SECONDS (default 30); fail at once if PID has exited. Plain bash, polled
# every 2 ms: starting an interpreter per check would swamp the startup figure.
wait_port() {
    local port=$1 limit=${2:-30} pid=${3:-} end
    end=$((EPOCHSECONDS + limit))
    while ((EPOCHSECONDS < end)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null && return 1
        sleep 0.002
    done
    return 1
}

# free_ports N: N distinct ports free on 127.0.0.1 now, picked at random below
# the kernel's ephemeral range, so that no outgoing connection (wrk's, the
# proxies', anyone's) takes one between this check and the server's bind.
free_ports() {
    python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
pool = list(range(10000, low)) if low > 11000 else []
random.shuffle(pool)
socks = []
for port in pool:
    if len(socks) == n:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        socks.append(s)
    except OSError:
        s.close()
while len(socks) < n:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# owns_port PID PORT: is the TCP socket listening on PORT held by PID or one of
# its descendants? (So a run never measures some other program that happens to
# listen there.)
owns_port() {
    local hex inodes p fd link i
    hex=$(printf '%04X' "$2")
    inodes=$(awk -v h=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == h {print $10}' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null)
    [[ -n $inodes ]] || return 1
    for p in $(tree "$1"); do
        for fd in /proc/"$p"/fd/*; do
            link=$(readlink "$fd" 2>/dev/null) || continue
            for i in $inodes; do [[ $link == "socket:[$i]" ]] && return 0; done
        done
    done
    return 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo n/a; }
fmt_mib() { [[ $1 =~ ^[0-9]+$ ]] && awk -v k="$1" 'BEGIN {printf "%.1f MiB", k/1024}' || echo n/a; }

# ------------------------------------------------------------------- setup --

tmp=$(mktemp -d /tmp/keygate-bench.XXXXXX) || die "cannot make a temporary directory"

command -v python3 >/dev/null || die "python3 is required"
[[ -x $KEYGATE ]] || die "no keygate binary at $KEYGATE (build it, or set KEYGATE)"
install_tools
# Run a private copy, so a rebuild of the binary during the run changes nothing.
cp "$KEYGATE" "$tmp/keygate" || die "cannot copy $KEYGATE"
KEYGATE_SRC=$KEYGATE
KEYGATE=$tmp/keygate
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
for b in "$NGINX" "$HAPROXY" "$(command -v wrk)"; do [[ -x $b ]] || die "missing $b after install"; done

# 1,000 idle connections plus the upstream side need more descriptors than the
# usual 1024; every process below inherits this.
want_fd=16384
if (($(ulimit -n) < want_fd)); then
    ulimit -n "$want_fd" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
fi

read -r P_UP P_KG P_KG_ADM P_KGN P_KGN_ADM P_KGB P_KGB_ADM P_NGX P_HAP <<<"$(free_ports 9)"

# The one key every benchmark presents: 43 printable characters, as gen-key makes.
KEY=$("$KEYGATE" gen-key 2>/dev/null) || KEY=bench-key-0123456789abcdefghijklmnopqrstuvwxyz
[[ ${#KEY} -ge 32 ]] || die "generated key is shorter than 32 bytes"

BODY=$(printf 'x%.0s' $(seq "$BODY_BYTES"))

# ---------------------------------------------------------------- upstream --

mkdir -p "$tmp/nginx-up" "$tmp/nginx-proxy"
cat >"$tmp/nginx-up/nginx.conf" <<EOF
# upstream: one worker answering every request with a fixed $BODY_BYTES-byte body
daemon off;
master_process on;
user root;
worker_processes 1;
pid $tmp/nginx-up/nginx.pid;
error_log $tmp/nginx-up/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx-up/body;
    proxy_temp_path $tmp/nginx-up/proxy;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    default_type text/plain;
    server {
        listen 127.0.0.1:$P_UP;
        location / { return 200 "$BODY"; }
    }
}
EOF

cat >"$tmp/nginx-proxy/nginx.conf" <<EOF
# nginx as the peer: the same job as keygate (check the key, strip it, forward)
daemon off;
master_process on;
user root;
worker_processes 2;
pid $tmp/nginx-proxy/nginx.pid;
error_log $tmp/nginx-proxy/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx-proxy/body;
    proxy_temp_path $tmp/nginx-proxy/proxy;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    map \$http_x_api_key \$kg_ok {
        "$KEY" 1;
        default 0;
    }
    upstream app {
        server 127.0.0.1:$P_UP;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$P_NGX;
        location / {
            default_type application/json;
            if (\$kg_ok = 0) {
                add_header WWW-Authenticate 'ApiKey realm="keygate", header="X-API-Key"' always;
                return 401 '{"error":"missing_api_key","message":"An API key is required."}';
            }
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-API-Key "";
        }
    }
}
EOF

cat >"$tmp/haproxy.cfg" <<EOF
# HAProxy as the peer: the same job as keygate (check the key, strip it, forward)
global
    nbthread 2
    maxconn 4096
    pidfile $tmp/haproxy.pid

defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-keep-alive 75s

frontend main
    bind 127.0.0.1:$P_HAP
    acl key_ok req.hdr(x-api-key) -m str -- $KEY
    http-request return status 401 content-type application/json string '{"error":"missing_api_key","message":"An API key is required."}' hdr WWW-Authenticate 'ApiKey realm="keygate", header="X-API-Key"' unless key_ok
    http-request del-header x-api-key
    default_backend app

backend app
    http-reuse always
    server up 127.0.0.1:$P_UP
EOF

# keygate config: $1 main port, $2 admin port, $3 access_log, $4 keys block
keygate_conf() {
    cat <<EOF
environment: production
listen: { address: 127.0.0.1, port: $1 }
upstream: { url: "http://127.0.0.1:$P_UP" }
admin: { address: 127.0.0.1, port: $2 }
auth:
$4
logging: { level: warn, access_log: $3 }
threads: 2
EOF
}
inline_keys="  keys:
    - { id: bench, key: \"$KEY\" }"
file_keys_1="  keys_file: $tmp/keys-1.json"
file_keys="  keys_file: $tmp/keys.json"

keygate_conf "$P_KG" "$P_KG_ADM" true "$inline_keys" >"$tmp/keygate.yaml"
keygate_conf "$P_KGN" "$P_KGN_ADM" false "$inline_keys" >"$tmp/keygate-noaccesslog.yaml"
keygate_conf "$P_KGB" "$P_KGB_ADM" true "$file_keys_1" >"$tmp/keygate-1json.yaml"
keygate_conf "$P_KGB" "$P_KGB_ADM" true "$file_keys" >"$tmp/keygate-100k.yaml"

# Keys files: 100,000 hashed keys with the benchmark key in the middle, and the
# benchmark key alone (the same format, for a like-for-like comparison).
python3 - "$tmp/keys.json" "$NKEYS" "$KEY" "$tmp/keys-1.json" <<'EOF'
import hashlib, json, os, sys
path, n, key, path1 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(path1, "w") as f:
    json.dump({"keys": [{"id": "k1", "hash": "sha256:" + hashlib.sha256(key.encode()).hexdigest()}]}, f)
keys = []
for i in range(n):
    secret = key if i == n // 2 else os.urandom(24).hex()
    keys.append({"id": "k%d" % (i + 1),
                 "hash": "sha256:" + hashlib.sha256(secret.encode()).hexdigest()})
with open(path, "w") as f:
    json.dump({"keys": keys}, f)
EOF
[[ -s $tmp/keys.json ]] || die "could not write the keys file"

# ---------------------------------------------------------------- starting --

# start NAME PORT cmd... : start in the background, wait for the port, set
# $started_pid and remember the pid for cleanup; the start-to-accepting time in
# ms goes to $tmp/NAME.startup. Not to be called in a subshell.
started_pid=
start() {
    local name=$1 port=$2 t0 pid
    shift 2
    started_pid=
    t0=$(now)
    # A session of its own: a Ctrl-C on the terminal reaches this script, which
    # stops everything in order, and not the servers directly (keygate would
    # start draining). Job control is off here, so setsid execs in place and
    # $! is the server's own id.
    setsid "$@" >/dev/null 2>"$tmp/$name.stderr" &
    pid=$!
    pids+=("$pid")
    if ! wait_port "$port" 60 "$pid"; then
        echo "bench: $name did not start listening on $port:" >&2
        tail -n 20 "$tmp/$name.stderr" >&2
        stop_pid "$pid"
        return 1
    fi
    awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.0f", (b - a) * 1000}' >"$tmp/$name.startup"
    if ! owns_port "$pid" "$port"; then
        echo "bench: port $port answers, but not from $name (another program holds it):" >&2
        tail -n 20 "$tmp/$name.stderr" >&2
        stop_pid "$pid"
        return 1
    fi
    started_pid=$pid
}

# ------------------------------------------------------------------- wrk ----

round=1   # the current round; each wrk output goes to $tmp/NAME.r$round.wrk

# CPU accounting, to tell how much of the machine something else used during a
# run: "other" = busy CPU time (user, nice, system, steal) of the whole machine,
# less that of wrk and of the processes in $watch (and their children, for the
# nginx workers), as a share of all CPU time. Clock ticks throughout.
watch=()
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
proc_ticks() {
    local p c sum=0 st stat_fields=()
    for p in "$@"; do
        for c in "$p" $(pgrep -P "$p" 2>/dev/null); do
            st=$(cat "/proc/$c/stat" 2>/dev/null) || continue
            st=${st##*) }     # past "pid (comm) ": field 3 onwards
            read -r -a stat_fields <<<"$st"
            sum=$((sum + stat_fields[11] + stat_fields[12]))   # utime, stime
        done
    done
    echo "$sum"
}

# seconds DURATION: wrk's duration (10, 10s, 2m, 1h) in seconds, 3600 if unclear
seconds() {
    local d=$1
    [[ $d =~ ^([0-9]+)([smh]?)$ ]] || { echo 3600; return; }
    case ${BASH_REMATCH[2]} in
        m) echo $((BASH_REMATCH[1] * 60)) ;;
        h) echo $((BASH_REMATCH[1] * 3600)) ;;
        *) echo $((BASH_REMATCH[1])) ;;
    esac
}

# run_wrk OUT ARGS...: wrk -t1 -c$CONNS ARGS with its output in OUT.wrk and its
# user and system CPU seconds in OUT.time; killed if it overruns by 2 minutes
run_wrk() {
    local out=$1 TIMEFORMAT='%U %S'
    shift
    { time timeout $(($(seconds "$DURATION") + 120)) wrk -t1 -c"$CONNS" "$@" >"$out.wrk" 2>&1; } 2>"$out.time"
}

# bench NAME PORT [with-key]: warm up, then one measured wrk run
bench() {
    local name=$1 port=$2 hdr=() out b0 t0 p0 b1 t1 p1 wrk_cpu
    out=$tmp/$name.r$round
    [[ ${3:-} == with-key ]] && hdr=(-H "X-API-Key: $KEY")
    echo "-- round $round/$ROUNDS: $name" >&2
    if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
        in_background timeout $(($(seconds "$WARMUP") + 120)) wrk -t1 -c"$CONNS" -d"$WARMUP" "${hdr[@]}" \
            "http://127.0.0.1:$port/" >/dev/null 2>&1
    fi
    read -r b0 t0 < <(machine_ticks)
    p0=$(proc_ticks "${watch[@]}")
    in_background run_wrk "$out" -d"$DURATION" --latency "${hdr[@]}" "http://127.0.0.1:$port/" ||
        note_failure "wrk against $name failed"
    read -r b1 t1 < <(machine_ticks)
    p1=$(proc_ticks "${watch[@]}")
    wrk_cpu=$(awk '{printf "%.0f", ($1 + $2) * 100}' "$out.time")
    awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v p=$((p1 - p0)) -v w="${wrk_cpu:-0}" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {if (t > 0) {o = (b - p - w * hz / 100) / t * 100; printf "%.0f\n", (o < 0) ? 0 : o}}' >"$out.other"
}

# wrk prints latencies as 812.00us, 1.23ms, 1.02s or 1.50m: convert to ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v == "") { print "n/a"; exit }
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

# one_field FILE rps|p50|p99|non2xx|errors|other: one figure from one wrk output
one_field() {
    local f=$1
    [[ -s $f ]] || return 0
    case $2 in
        rps) awk '/^Requests\/sec:/ {printf "%.0f\n", $2}' "$f" ;;
        p50) awk '$1 == "50%" {print $2}' "$f" | while read -r v; do to_ms "$v"; echo; done ;;
        p99) awk '$1 == "99%" {print $2}' "$f" | while read -r v; do to_ms "$v"; echo; done ;;
        non2xx) grep -q '^Requests/sec:' "$f" &&
                awk '/Non-2xx or 3xx responses:/ {n = $NF} END {print n + 0}' "$f" ;;
        other) [[ -s ${f%.wrk}.other ]] && cat "${f%.wrk}.other" ;;
        errors) grep -q '^Requests/sec:' "$f" &&
                awk '/Socket errors:/ {s = $0; sub(/.*Socket errors: /, "", s); gsub(/,/, "", s)
                                       split(s, a, " "); n = a[2] + a[4] + a[6] + a[8]}
                     END {print n + 0}' "$f" ;;
    esac
}

# field NAME METRIC: the median of METRIC over the rounds that produced it
field() {
    local f
    for f in "$tmp/$1".r*.wrk; do [[ -e $f ]] && one_field "$f" "$2"; done |
        sort -g | awk -v ms="$([[ $2 == p* ]] && echo 1)" 'NF {v[++n] = $1}
            END {if (!n) {print "n/a"; exit}
                 m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
                 printf(ms ? "%.2f\n" : "%.0f\n", m)}'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

# ----------------------------------------------------------------- targets --
# Each target starts what it measures, runs wrk against it and stops it again,
# so only the upstream and the process under test are running during a run.

kg_rss_idle=n/a kg_rss_after=n/a kg_rss_conns=n/a kgb_rss=n/a

t_upstream() { watch=("$up_pid"); bench upstream "$P_UP" with-key; }

# keygate, default logging (the access log is on and goes to stdout = /dev/null);
# also the 401 path and, in the first round, the memory figures.
t_keygate() {
    start keygate "$P_KG" "$KEYGATE" --config "$tmp/keygate.yaml" || { note_failure "keygate did not start"; return; }
    local pid=$started_pid
    watch=("$up_pid" "$pid")
    if ((round == 1)); then sleep 0.5; kg_rss_idle=$(rss_kib "$pid"); fi
    bench keygate "$P_KG" with-key
    bench keygate-401 "$P_KG"
    if ((round == 1)); then
        sleep 1
        kg_rss_after=$(rss_kib "$pid")
        echo "-- keygate with $IDLE_CONNS idle keep-alive connections" >&2
        kg_rss_conns=$(idle_conns_rss "$P_KG" "$pid") ||
            { note_failure "idle-connections memory test failed: $(tail -n1 "$tmp/idle-conns.stderr")"; kg_rss_conns=n/a; }
    fi
    stop_pid "$pid"
}

t_keygate_noaccesslog() {
    start keygate-noaccesslog "$P_KGN" "$KEYGATE" --config "$tmp/keygate-noaccesslog.yaml" ||
        { note_failure "keygate (access_log: false) did not start"; return; }
    local pid=$started_pid
    watch=("$up_pid" "$pid")
    bench keygate-noaccesslog "$P_KGN" with-key
    stop_pid "$pid"
}

t_keygate_1json() {
    start keygate-1json "$P_KGB" "$KEYGATE" --config "$tmp/keygate-1json.yaml" ||
        { note_failure "keygate (1 key, keys_file) did not start"; return; }
    local pid=$started_pid
    watch=("$up_pid" "$pid")
    bench keygate-1json "$P_KGB" with-key
    stop_pid "$pid"
}

t_keygate_100k() {
    start keygate-100k "$P_KGB" "$KEYGATE" --config "$tmp/keygate-100k.yaml" ||
        { note_failure "keygate ($NKEYS keys) did not start"; return; }
    local pid=$started_pid
    watch=("$up_pid" "$pid")
    if ((round == 1)); then sleep 0.5; kgb_rss=$(rss_kib "$pid"); fi
    bench keygate-100k "$P_KGB" with-key
    stop_pid "$pid"
}

t_nginx() {
    start nginx "$P_NGX" "$NGINX" -c "$tmp/nginx-proxy/nginx.conf" -p "$tmp/nginx-proxy" \
        -e "$tmp/nginx-proxy/error.log" || { note_failure "nginx (peer) did not start"; return; }
    local pid=$started_pid
    watch=("$up_pid" "$pid")
    bench nginx "$P_NGX" with-key
    bench nginx-401 "$P_NGX"
    stop_pid "$pid"
}

t_haproxy() {
    start haproxy "$P_HAP" "$HAPROXY" -db -f "$tmp/haproxy.cfg" || { note_failure "haproxy did not start"; return; }
    local pid=$started_pid
    watch=("$up_pid" "$pid")
    bench haproxy "$P_HAP" with-key
    bench haproxy-401 "$P_HAP"
    stop_pid "$pid"
}

# idle_conns_rss PORT PID: open $IDLE_CONNS connections to keygate, one
# authorised keep-alive request each, keep them open, print keygate's VmRSS (KiB).
idle_conns_rss() {
    timeout --foreground 120 python3 - "$1" "$KEY" "$IDLE_CONNS" "$2" 2>"$tmp/idle-conns.stderr" <<'EOF'
import socket, sys, time
port, key, n, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
req = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-API-Key: %s\r\n\r\n" % (port, key)).encode()
deadline = time.monotonic() + 90

def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed inside the body")
        body += chunk
    return status

socks = []
for i in range(n):
    if time.monotonic() > deadline:
        sys.exit("time limit reached after %d connections" % i)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    status = read_response(s)
    if status != b"200":
        sys.exit("connection %d: status %s" % (i, status.decode()))
    socks.append(s)
time.sleep(1)
for s in socks:          # all still open?
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            sys.exit("keygate closed an idle connection before the measurement")
    except BlockingIOError:
        pass
with open("/proc/%s/status" % pid) as f:
    for line in f:
        if line.startswith("VmRSS:"):
            print(line.split()[1])
for s in socks:
    s.close()
EOF
}

# startup_runs NAME CONFIG PORT: 3 fresh starts; sets startup_result
startup_runs() {
    local name=$1 conf=$2 port=$3 i v=()
    startup_result=n/a
    for i in 1 2 3; do
        start "$name-$i" "$port" "$KEYGATE" --config "$conf" || return 1
        v+=("$(cat "$tmp/$name-$i.startup")")
        stop_pid "$started_pid"
    done
    startup_result="$(printf '%s\n' "${v[@]}" | sort -n | sed -n 2p) ms  (runs: ${v[*]} ms)"
}

# ------------------------------------------------------------------- run ----

echo "keygate benchmark  $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "nproc:    $(nproc)"
echo "keygate:  $("$KEYGATE" --version 2>&1 | head -1)  ($KEYGATE_SRC, $(date -u -r "$KEYGATE_SRC" '+built %Y-%m-%d %H:%M UTC'))"
echo "nginx:    $("$NGINX" -v 2>&1 | head -1)"
echo "haproxy:  $("$HAPROXY" -v 2>&1 | head -1)"
echo "wrk:      $(wrk -v 2>&1 | head -1)"
echo "load:     wrk -t1 -c$CONNS -d$DURATION --latency after a $WARMUP warm-up; GET /, $BODY_BYTES-byte body"
if ((ROUNDS > 1)); then echo "rounds:   $ROUNDS, in rotation; figures are medians"; fi
echo "loadavg:  $(cut -d' ' -f1-3 /proc/loadavg) (before)"

# The upstream first: everything else forwards to it. It runs throughout.
start upstream "$P_UP" "$NGINX" -c "$tmp/nginx-up/nginx.conf" -p "$tmp/nginx-up" -e "$tmp/nginx-up/error.log" \
    || die "the upstream nginx did not start"
up_pid=$started_pid
got=$(python3 - "$P_UP" <<'EOF'
import sys, urllib.request
print(len(urllib.request.urlopen("http://127.0.0.1:%s/" % sys.argv[1], timeout=5).read()))
EOF
)
[[ $got == "$BODY_BYTES" ]] || note_failure "upstream body is ${got:-?} bytes, not $BODY_BYTES"

# Round r starts at the r-th target, so with ROUNDS > 1 no target always runs
# first or last.
targets=(t_upstream t_keygate t_nginx t_haproxy t_keygate_noaccesslog t_keygate_1json t_keygate_100k)
for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < ${#targets[@]}; i++)); do
        "${targets[(i + round - 1) % ${#targets[@]}]}"
    done
done

echo "-- keygate startup" >&2
startup_runs startup-1 "$tmp/keygate.yaml" "$P_KG" || note_failure "keygate startup (1 key) failed"
kg_startup=$startup_result
startup_runs startup-100k "$tmp/keygate-100k.yaml" "$P_KGB" || note_failure "keygate startup ($NKEYS keys) failed"
kgb_startup=$startup_result
echo "loadavg:  $(cut -d' ' -f1-3 /proc/loadavg) (after)"

# ----------------------------------------------------------------- report ---

row() {
    printf '%-32s %9s %9s %9s %9s %8s %7s\n' "$1" "$(field "$2" rps)" "$(field "$2" p50)" \
        "$(field "$2" p99)" "$(field "$2" non2xx)" "$(field "$2" errors)" "$(field "$2" other)"
}
line() { printf '  %-52s %s\n' "$1" "$2"; }

echo
printf '%-32s %9s %9s %9s %9s %8s %7s\n' "target (with the key)" "rps" "p50 ms" "p99 ms" "non-2xx" "sockerr" "other%"
printf '%-32s %9s %9s %9s %9s %8s %7s\n' "--------------------------------" "---------" "---------" "---------" "---------" "--------" "-------"
row "upstream (direct)" upstream
row "keygate" keygate
row "nginx" nginx
row "haproxy" haproxy
echo
echo "extra runs (same load)"
row "keygate access_log: false" keygate-noaccesslog
row "keygate 1 key, keys_file" keygate-1json
row "keygate $NKEYS keys, keys_file" keygate-100k
row "keygate 401 (no key)" keygate-401
row "nginx 401 (no key)" nginx-401
row "haproxy 401 (no key)" haproxy-401

busiest=$(cat "$tmp"/*.other 2>/dev/null | sort -n | tail -n1)
if [[ ${busiest:-0} -ge 10 ]]; then
    echo
    echo "note: other processes used up to ${busiest}% of the machine's CPU during a run (other%);"
    if ((ROUNDS > 1)); then
        echo "      rows with a high other% are not comparable: rerun on a quiet machine"
    else
        echo "      rows with a high other% are not comparable: rerun on a quiet machine, or with ROUNDS=3"
    fi
fi

kg_rps=$(field keygate rps) kg_p99=$(field keygate p99)
echo
echo "ratios"
line "keygate/nginx    rps" "$(ratio "$kg_rps" "$(field nginx rps)")"
line "keygate/nginx    p99" "$(ratio "$kg_p99" "$(field nginx p99)")"
line "keygate/haproxy  rps" "$(ratio "$kg_rps" "$(field haproxy rps)")"
line "keygate/haproxy  p99" "$(ratio "$kg_p99" "$(field haproxy p99)")"
line "keygate/upstream rps" "$(ratio "$kg_rps" "$(field upstream rps)")"
line "keygate 401 rps / authorised rps" "$(ratio "$(field keygate-401 rps)" "$kg_rps")"
line "keygate access_log:false rps / default rps" "$(ratio "$(field keygate-noaccesslog rps)" "$kg_rps")"
line "keygate $NKEYS keys rps / 1 key rps (keys_file)" "$(ratio "$(field keygate-100k rps)" "$(field keygate-1json rps)")"
line "keygate $NKEYS keys p99 / 1 key p99 (keys_file)" "$(ratio "$(field keygate-100k p99)" "$(field keygate-1json p99)")"

echo
echo "keygate memory (VmRSS)"
line "idle, 1 key, just started" "$(fmt_mib "$kg_rss_idle")"
line "idle, 1 key, after its load runs" "$(fmt_mib "$kg_rss_after")"
line "$IDLE_CONNS idle keep-alive connections open" "$(fmt_mib "$kg_rss_conns")"
if [[ $kg_rss_conns =~ ^[0-9]+$ && $kg_rss_after =~ ^[0-9]+$ ]]; then
    line "  per connection (vs after its load runs)" \
        "$(awk -v a="$kg_rss_conns" -v b="$kg_rss_after" -v n="$IDLE_CONNS" 'BEGIN {printf "%.1f KiB", (a - b) / n}')"
fi
line "idle, $NKEYS keys, just started" "$(fmt_mib "$kgb_rss")"

echo
echo "keygate startup, process start to port accepting (median of 3)"
line "1 key (inline)" "$kg_startup"
line "$NKEYS keys (keys_file, $(du -k "$tmp/keys.json" | cut -f1) KiB of JSON)" "$kgb_startup"

if ((failures)); then
    echo
    echo "bench: $failures part(s) could not run; see the messages above" >&2
    exit 1
fi
exit 0
