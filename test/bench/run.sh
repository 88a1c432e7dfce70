#!/usr/bin/env bash
# fleetgate vs mosquitto on this machine, in one run (docs/benchmarks.md):
#   1. QoS 1 ingest, closed loop: acked publishes/s and PUBACK latency, with a
#      20 s CPU profile of fleetgate taken during its first round;
#   2. QoS 1 ingest, open loop at a fixed rate both brokers sustain: latency at
#      equal load;
#   3. memory per idle connection, fresh processes: fleetgate with its
#      defaults, fleetgate tuned for idle memory, mosquitto;
#   4. pub/sub through the full path, fresh processes (fleetgate-dev with its
#      dispatcher: frontend → Kafka → dispatcher → Redis → frontend):
#      a. publisher → subscriber pairs, open loop at PAIRS_RATE: end-to-end
#         latency, with a CPU profile of fleetgate;
#      b. the same pairs, closed loop (PAIRS_WINDOW messages in flight end
#         to end per pair): deliveries/s, with a CPU profile of fleetgate;
#      c. fan-out, 1 publisher → FANOUT_SUBSCRIBERS subscribers of one topic
#         at FANOUT_RATE: deliveries/s and end-to-end latency;
#      d. the open-loop pairs at each rate of PAIRS_SWEEP: latency against
#         load;
#      then the pub/sub targets (p99 at PAIRS_RATE, closed-loop ratio to
#      mosquitto), read off the JSON results (needs python3).
#   5. access control (issue 14; not in the default SECTIONS: SECTIONS=access,
#      about 12 minutes, most of it bcrypt): files from `fleetgate-bench
#      access-files` (ACCESS_IDENTITIES identities in the groups of a rules
#      file of ACCESS_RULES rules, an ES256 key and a JWT per device, a
#      bcrypt password file and its plain twin, hashed for mosquitto by
#      mosquitto_passwd -U), then
#      a. QoS 1 ingest, closed loop, JWT publishers on devices/%u/telemetry:
#         fleetgate with the rules file against the same fleetgate without;
#      b. ACCESS_DEVICES devices reconnecting (CONNECT → CONNACK →
#         DISCONNECT, after warm-up passes that fill the password cache):
#         fleetgate with JWTs, cached passwords and anonymous clients (one
#         process configured for all three, with the rules file), beside
#         mosquitto with a password file and mosquitto anonymous;
#      c. ACCESS_UNCACHED_DEVICES devices with passwords against a fleetgate
#         whose password cache is off (every CONNECT pays bcrypt), beside
#         both mosquittos;
#      then the targets, read off the JSON results (needs python3).
#   6. retained messages (issue 15; not in the default SECTIONS:
#      SECTIONS=retained, about 4 minutes): RETAINED_MESSAGES retained QoS 1
#      messages of RETAINED_SIZE bytes, each on a topic of its own
#      (bench-retained/<i/1000>/<i>), stored, then a fresh MQTT 3.1.1 client
#      subscribes to bench-retained/# at QoS 1 and acknowledges each message
#      as it arrives: time from SUBSCRIBE to SUBACK, to the first and the last
#      message, how many arrived; both brokers' peak RSS and fleetgate's peak
#      Go heap (its /metrics every 50 ms) during the SUBSCRIBE:
#      a. fresh brokers at their queue bounds (fleetgate's defaults; mosquitto
#         as configured here): both stop the stream at the subscriber's queue
#         bound;
#      b. fresh brokers whose queue bound lets every message through
#         (RETAINED_FG_FLAGS, RETAINED_MQ_CONF), RETAINED_ROUNDS rounds;
#      c. b's brokers once more, with a CPU profile of fleetgate during its
#         wildcard SUBSCRIBE (apart, so that b's figures carry no profiler);
#      then the ratios fleetgate/mosquitto, read off the JSON results (needs
#      python3).
# Everything runs on 127.0.0.1 on free ports, in a temporary directory, and
# is stopped on exit. Takes about 11 minutes (section 4 alone: 5½).
#
# Knobs (environment): SECTIONS (any of "ingest idle pubsub access retained";
# default "ingest idle pubsub"),
# DURATION ROUNDS PUBLISHERS WINDOW SIZE OPEN_RATE
# IDLE_CLIENTS IDLE_SETTLE, FG_TUNED_FLAGS / FG_TUNED_ENV (the tuned idle variant),
# PAIRS PAIRS_RATE PAIRS_WINDOW PAIRS_DURATION PAIRS_ROUNDS PAIRS_PERSISTENT
# PAIRS_SWEEP PAIRS_SWEEP_DURATION, FG_BASELINE_BIN (a fleetgate-dev binary of
# an earlier build, measured in section 4 beside the current one),
# FANOUT_SUBSCRIBERS FANOUT_RATE FANOUT_DURATION FANOUT_QOS,
# FG_PUBSUB_FLAGS (extra fleetgate-dev flags for section 4),
# ACCESS_IDENTITIES ACCESS_GROUPS ACCESS_RULES ACCESS_PUBLISHERS ACCESS_DURATION
# ACCESS_ROUNDS ACCESS_DEVICES ACCESS_UNCACHED_DEVICES ACCESS_CONCURRENCY ACCESS_WARMUP_PASSES
# ACCESS_PASSWORD_COST ACCESS_PASSWORD_HASHES ACCESS_PPROF_SECONDS (section 5),
# RETAINED_MESSAGES RETAINED_SIZE RETAINED_ROUNDS RETAINED_FG_FLAGS
# RETAINED_MQ_CONF RETAINED_PPROF_SECONDS (section 6),
# DEV_BIN / BENCH_BIN (use these binaries, do not build; FLEETGATE_* names
# would be taken for fleetgate settings),
# OUT (directory kept for the JSON results and the profile; default: a
# temporary one, removed at exit unless KEEP=1).
set -euo pipefail

ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-2}
PUBLISHERS=${PUBLISHERS:-100}
WINDOW=${WINDOW:-16}
SIZE=${SIZE:-64}
OPEN_RATE=${OPEN_RATE:-10000}
OPEN_DURATION=${OPEN_DURATION:-12s}
IDLE_CLIENTS=${IDLE_CLIENTS:-5000}
# Past Go's 2-minute forced GC, so the Go brokers' RSS includes a full GC cycle.
IDLE_SETTLE=${IDLE_SETTLE:-125s}
FG_TUNED_FLAGS=${FG_TUNED_FLAGS:--mqtt.read-buffer-size 256 -mqtt.write-buffer-size 256 -mqtt.max-client-writes-pending 8}
FG_TUNED_ENV=${FG_TUNED_ENV:-GOGC=25}
SECTIONS=${SECTIONS:-ingest idle pubsub}
PAIRS=${PAIRS:-100}
PAIRS_RATE=${PAIRS_RATE:-5000}
PAIRS_WINDOW=${PAIRS_WINDOW:-16}
PAIRS_DURATION=${PAIRS_DURATION:-15s}
PAIRS_ROUNDS=${PAIRS_ROUNDS:-2}
# Subscriber sessions: clean unless PAIRS_PERSISTENT=1.
PAIRS_PERSISTENT=${PAIRS_PERSISTENT:-0}
# Further open-loop pair rates (section 4d), each 1 round of PAIRS_SWEEP_DURATION.
PAIRS_SWEEP=${PAIRS_SWEEP:-300 1000 2500}
PAIRS_SWEEP_DURATION=${PAIRS_SWEEP_DURATION:-10s}
FANOUT_SUBSCRIBERS=${FANOUT_SUBSCRIBERS:-1000}
FANOUT_RATE=${FANOUT_RATE:-10}
FANOUT_DURATION=${FANOUT_DURATION:-15s}
FANOUT_QOS=${FANOUT_QOS:-1}
FG_PUBSUB_FLAGS=${FG_PUBSUB_FLAGS:-}
ACCESS_IDENTITIES=${ACCESS_IDENTITIES:-100000}
ACCESS_GROUPS=${ACCESS_GROUPS:-100}
ACCESS_RULES=${ACCESS_RULES:-1000}
ACCESS_PUBLISHERS=${ACCESS_PUBLISHERS:-$PUBLISHERS}
ACCESS_DURATION=${ACCESS_DURATION:-$DURATION}
ACCESS_ROUNDS=${ACCESS_ROUNDS:-$ROUNDS}
ACCESS_DEVICES=${ACCESS_DEVICES:-10000}
# bcrypt at cost 10 costs about 70 ms of one core per CONNECT: keep it small.
ACCESS_UNCACHED_DEVICES=${ACCESS_UNCACHED_DEVICES:-200}
ACCESS_CONCURRENCY=${ACCESS_CONCURRENCY:-64}
# Passes before the measured one in 5b: the first fills fleetgate's password
# cache (bcrypt for every device); the second catches the devices whose
# CONNECT failed in the first while bcrypt starved the node, so that the
# measured pass is all reconnects.
ACCESS_WARMUP_PASSES=${ACCESS_WARMUP_PASSES:-2}
ACCESS_PASSWORD_COST=${ACCESS_PASSWORD_COST:-10}
ACCESS_PASSWORD_HASHES=${ACCESS_PASSWORD_HASHES:-64}
ACCESS_PPROF_SECONDS=${ACCESS_PPROF_SECONDS:-4}
RETAINED_MESSAGES=${RETAINED_MESSAGES:-100000}
RETAINED_SIZE=${RETAINED_SIZE:-$SIZE}
RETAINED_ROUNDS=${RETAINED_ROUNDS:-2}
# A subscriber's queue holds session.max-queued-messages (1,000) and
# -bytes (1 MiB) by default, and a wildcard SUBSCRIBE's retained messages
# stop at that bound; 6b raises both past what RETAINED_MESSAGES take.
RETAINED_FG_FLAGS=${RETAINED_FG_FLAGS:--session.max-queued-messages $RETAINED_MESSAGES -session.max-queued-bytes 256MiB}
# mosquitto drops what exceeds max_inflight_messages + max_queued_messages
# (256 + 1000 here); 0 is no bound.
RETAINED_MQ_CONF=${RETAINED_MQ_CONF:-max_queued_messages 0}
RETAINED_PPROF_SECONDS=${RETAINED_PPROF_SECONDS:-10}

WORK=$(mktemp -d /tmp/fleetgate-bench.XXXXXX)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT" "$WORK/bin"
PIDS=()

cleanup() {
	local code=$?
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${KEEP:-0} != 1 && $OUT == "$WORK/out" ]]; then
		rm -rf "$WORK"
	else
		echo "results kept in $OUT"
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '\n=== %s\n' "$*"; }

# section NAME: whether SECTIONS includes NAME.
section() { [[ " $SECTIONS " == *" $1 "* ]]; }

# Stops one process this script started.
stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# Waits until something accepts TCP connections on 127.0.0.1:$1.
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "nothing listens on port $1" >&2
	return 1
}

log "machine"
echo "$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -sr), $(go version | cut -d' ' -f3)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
mosquitto -h 2>&1 | head -1 || true

# Thousands of sockets per process: lift the soft limit for this shell and
# so for every process it starts.
ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n)"

log "build"
FG_DEV=${DEV_BIN:-$WORK/bin/fleetgate-dev}
BENCH=${BENCH_BIN:-$WORK/bin/fleetgate-bench}
if [[ -z ${DEV_BIN:-} ]]; then
	(cd "$ROOT" && go build -o "$FG_DEV" ./cmd/fleetgate-dev)
fi
if [[ -z ${BENCH_BIN:-} ]]; then
	(cd "$ROOT" && go build -o "$BENCH" ./cmd/fleetgate-bench)
fi
echo "fleetgate-dev: $FG_DEV"
echo "fleetgate-bench: $BENCH"

log "what a wake-up costs on this machine (every hop of a message between processes or goroutines pays it)"
"$BENCH" wakeup

# start_fleetgate NAME [ENV=VALUE ...] -- [FLAGS ...]: a fresh dev stack
# (embedded Kafka, data in a new directory). Sets FG_PID, FG_MQTT, FG_HTTP.
start_fleetgate() {
	local name=$1
	shift
	local envs=()
	while [[ $# -gt 0 && $1 != -- ]]; do
		envs+=("$1")
		shift
	done
	[[ $# -gt 0 ]] && shift
	local ports extra=()
	mapfile -t ports < <("$BENCH" free-port 4)
	FG_MQTT=127.0.0.1:${ports[0]}
	FG_HTTP=127.0.0.1:${ports[2]}
	# The dev stack starts its own Redis; give each one its own port.
	# (Read the help text whole: grep -q closing the pipe early would fail
	# the pipeline under pipefail, and every stack would share Redis's
	# default port.)
	local help
	local bin=${START_BIN:-$FG_DEV}
	help=$("$bin" -help 2>&1 || true)
	if [[ $help == *-dev.redis-listen* ]]; then
		extra+=(-dev.redis-listen "127.0.0.1:${ports[3]}")
	fi
	# The CPU profiles of sections 1 and 4 need /debug/pprof, off by
	# default since access control (builds before it serve it always).
	if [[ $help == *-http.pprof* ]]; then
		extra+=(-http.pprof)
	fi
	env "${envs[@]}" "$bin" \
		-dev.data-dir "$WORK/$name-data" \
		-dev.kafka-addr "127.0.0.1:${ports[1]}" \
		-mqtt.tcp-addr "$FG_MQTT" -mqtt.ws-addr "" \
		-http.addr "$FG_HTTP" -log.level warn "${extra[@]}" "$@" \
		>"$WORK/$name.log" 2>&1 &
	FG_PID=$!
	PIDS+=("$FG_PID")
	for _ in $(seq 150); do
		# Ready can come before the MQTT listener is up (a big rules file
		# is parsed first): wait for both.
		if curl -sf "http://$FG_HTTP/readyz" >/dev/null && wait_port "${ports[0]}"; then
			echo "$name: pid $FG_PID, mqtt $FG_MQTT, http $FG_HTTP ${envs[*]} $*"
			return 0
		fi
		sleep 0.2
	done
	echo "$name did not become ready:" >&2
	cat "$WORK/$name.log" >&2
	return 1
}

# start_mosquitto NAME [PASSWORD_FILE]: Debian's mosquitto, persistence off;
# anonymous clients allowed, or with PASSWORD_FILE only its users; lines in
# MQ_EXTRA_CONF come last and override the ones before. Sets MQ_PID,
# MQ_ADDR.
start_mosquitto() {
	local name=$1 port access="allow_anonymous true"
	if [[ -n ${2:-} ]]; then
		access="allow_anonymous false
password_file $2"
	fi
	port=$("$BENCH" free-port)
	cat >"$WORK/$name.conf" <<EOF
listener $port 127.0.0.1
$access
persistence false
# Like fleetgate's Receive Maximum; the mosquitto default is 20.
max_inflight_messages 256
max_queued_messages 1000
# Go sets TCP_NODELAY on every socket; without it mosquitto's PUBACKs wait
# for delayed ACKs (about 40 ms per round trip on loopback).
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
${MQ_EXTRA_CONF:-}
EOF
	mosquitto -c "$WORK/$name.conf" >"$WORK/$name.log" 2>&1 &
	MQ_PID=$!
	PIDS+=("$MQ_PID")
	MQ_ADDR=127.0.0.1:$port
	wait_port "$port"
	echo "$name: pid $MQ_PID, mqtt $MQ_ADDR"
}

if section ingest; then
log "start brokers for the publish runs"
start_fleetgate fleetgate
start_mosquitto mosquitto

log "1. QoS 1 ingest, closed loop: $PUBLISHERS publishers, $SIZE-byte payloads, window $WINDOW, $ROUNDS rounds of $DURATION"
"$BENCH" compare pub \
	-target "fleetgate=$FG_MQTT,pid=$FG_PID,pprof=$FG_HTTP" \
	-target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-qos 1 -publishers "$PUBLISHERS" -size "$SIZE" -window "$WINDOW" \
	-duration "$DURATION" -warmup 3s -rounds "$ROUNDS" \
	-pprof-dir "$OUT" -pprof-seconds 20 -json-out "$OUT/qos1-closed.json"

log "fleetgate CPU profile (20 s, during its first QoS 1 round): top functions"
if [[ -s $OUT/fleetgate.cpu.pprof ]]; then
	(cd "$ROOT" && go tool pprof -top -nodecount=35 "$FG_DEV" "$OUT/fleetgate.cpu.pprof" 2>/dev/null | sed -n '1,45p')
	log "same profile, cumulative"
	(cd "$ROOT" && go tool pprof -top -cum -nodecount=30 "$FG_DEV" "$OUT/fleetgate.cpu.pprof" 2>/dev/null | sed -n '6,40p')
else
	echo "no profile was taken"
fi

log "2. QoS 1 ingest, open loop: $OPEN_RATE msg/s in total over $PUBLISHERS publishers, 1 round of $OPEN_DURATION"
"$BENCH" compare pub \
	-target "fleetgate=$FG_MQTT,pid=$FG_PID,pprof=$FG_HTTP" \
	-target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-qos 1 -publishers "$PUBLISHERS" -size "$SIZE" -window 256 -rate "$OPEN_RATE" \
	-duration "$OPEN_DURATION" -warmup 2s -rounds 1 -json-out "$OUT/qos1-open.json" \
	-pprof-dir "$OUT/open-loop" -pprof-seconds 10

log "fleetgate CPU profile during the open-loop run: top functions, cumulative"
if [[ -s $OUT/open-loop/fleetgate.cpu.pprof ]]; then
	(cd "$ROOT" && go tool pprof -top -cum -nodecount=30 "$FG_DEV" "$OUT/open-loop/fleetgate.cpu.pprof" 2>/dev/null | sed -n '1,40p')
fi

stop "$FG_PID"
stop "$MQ_PID"
fi

if section idle; then
log "3. memory per idle connection: $IDLE_CLIENTS connections to each, fresh processes, all at once, settle $IDLE_SETTLE"
start_fleetgate fleetgate-default
DEF_PID=$FG_PID DEF_MQTT=$FG_MQTT
# shellcheck disable=SC2086 # the flags are a word list
start_fleetgate fleetgate-tuned $FG_TUNED_ENV -- $FG_TUNED_FLAGS
TUN_PID=$FG_PID TUN_MQTT=$FG_MQTT
start_mosquitto mosquitto-idle
"$BENCH" compare idle \
	-target "fleetgate-default=$DEF_MQTT,pid=$DEF_PID" \
	-target "fleetgate-tuned=$TUN_MQTT,pid=$TUN_PID" \
	-target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-clients "$IDLE_CLIENTS" -rounds 1 -parallel -settle "$IDLE_SETTLE" -json-out "$OUT/idle.json"
echo "fleetgate-tuned: $FG_TUNED_ENV $FG_TUNED_FLAGS"
stop "$DEF_PID"
stop "$TUN_PID"
stop "$MQ_PID"
fi

# top_cum TITLE PROFILE: the cumulative top of a fleetgate CPU profile.
top_cum() {
	log "$1"
	if [[ -s $2 ]]; then
		(cd "$ROOT" && go tool pprof -top -cum -nodecount=40 "$FG_DEV" "$2" 2>/dev/null | sed -n '1,50p')
		log "same profile, flat"
		(cd "$ROOT" && go tool pprof -top -nodecount=25 "$FG_DEV" "$2" 2>/dev/null | sed -n '6,32p')
	else
		echo "no profile was taken"
	fi
}

# cpu_seconds PID: user plus system CPU time of a process so far.
cpu_seconds() {
	awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# redis_cpu LABEL BEFORE: the CPU the dev stack's redis-server used since
# BEFORE. fleetgate's "server cpu" is the fleetgate-dev process only; its
# Redis is a child process of its own.
redis_cpu() {
	[[ -n $PS_REDIS_PID ]] || return 0
	echo "redis-server (child of fleetgate-dev) CPU during $1: $(awk -v a="$2" -v b="$(cpu_seconds "$PS_REDIS_PID")" 'BEGIN {printf "%.1f s", b - a}')"
}

if section pubsub; then
log "4. pub/sub through the full path: fresh brokers"
# shellcheck disable=SC2086 # the flags are a word list
start_fleetgate fleetgate-pubsub -- $FG_PUBSUB_FLAGS
PS_FG_PID=$FG_PID PS_FG_MQTT=$FG_MQTT PS_FG_HTTP=$FG_HTTP
PS_REDIS_PID=$(pgrep -P "$PS_FG_PID" redis-server | head -1 || true)
echo "fleetgate-pubsub redis-server: pid ${PS_REDIS_PID:-none (in-memory Redis inside fleetgate-dev)}"
# A previous build of fleetgate measured in the same run, beside the current
# one and mosquitto (FG_BASELINE_BIN, a fleetgate-dev binary).
BASE_TARGET=()
if [[ -n ${FG_BASELINE_BIN:-} ]]; then
	# shellcheck disable=SC2086 # the flags are a word list
	START_BIN=$FG_BASELINE_BIN start_fleetgate fleetgate-baseline -- $FG_PUBSUB_FLAGS
	BASE_TARGET=(-target "baseline=$FG_MQTT,pid=$FG_PID")
fi
start_mosquitto mosquitto-pubsub
persistent=()
if [[ $PAIRS_PERSISTENT == 1 ]]; then
	persistent=(-persistent)
fi

r0=$(cpu_seconds "${PS_REDIS_PID:-0}")
log "4a. pairs, open loop: $PAIRS pairs, $PAIRS_RATE msg/s in total, QoS 1 both ways, $PAIRS_ROUNDS rounds of $PAIRS_DURATION"
"$BENCH" compare pairs \
	-target "fleetgate=$PS_FG_MQTT,pid=$PS_FG_PID,pprof=$PS_FG_HTTP" \
	"${BASE_TARGET[@]}" -target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-pairs "$PAIRS" -rate "$PAIRS_RATE" -window 256 -size "$SIZE" "${persistent[@]}" \
	-duration "$PAIRS_DURATION" -warmup 3s -rounds "$PAIRS_ROUNDS" \
	-pprof-dir "$OUT/pairs-open" -pprof-seconds 10 -json-out "$OUT/pairs-open.json"
redis_cpu "4a (both targets' rounds)" "$r0"
top_cum "fleetgate CPU profile during the open-loop pairs (10 s): top functions, cumulative" "$OUT/pairs-open/fleetgate.cpu.pprof"

r0=$(cpu_seconds "${PS_REDIS_PID:-0}")
log "4b. pairs, closed loop: $PAIRS pairs, $PAIRS_WINDOW messages in flight end to end per pair, $PAIRS_ROUNDS rounds of $PAIRS_DURATION"
"$BENCH" compare pairs \
	-target "fleetgate=$PS_FG_MQTT,pid=$PS_FG_PID,pprof=$PS_FG_HTTP" \
	"${BASE_TARGET[@]}" -target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-pairs "$PAIRS" -window "$PAIRS_WINDOW" -size "$SIZE" "${persistent[@]}" \
	-duration "$PAIRS_DURATION" -warmup 3s -rounds "$PAIRS_ROUNDS" \
	-pprof-dir "$OUT/pairs-closed" -pprof-seconds 10 -json-out "$OUT/pairs-closed.json"
redis_cpu "4b (both targets' rounds)" "$r0"
top_cum "fleetgate CPU profile during the closed-loop pairs (10 s): top functions, cumulative" "$OUT/pairs-closed/fleetgate.cpu.pprof"

r0=$(cpu_seconds "${PS_REDIS_PID:-0}")
log "4c. fan-out: 1 publisher → $FANOUT_SUBSCRIBERS subscribers, $FANOUT_RATE msg/s, QoS $FANOUT_QOS both ways, 1 round of $FANOUT_DURATION"
"$BENCH" compare fanout \
	-target "fleetgate=$PS_FG_MQTT,pid=$PS_FG_PID,pprof=$PS_FG_HTTP" \
	"${BASE_TARGET[@]}" -target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-subscribers "$FANOUT_SUBSCRIBERS" -rate "$FANOUT_RATE" -qos "$FANOUT_QOS" -sub-qos "$FANOUT_QOS" -size "$SIZE" \
	-duration "$FANOUT_DURATION" -warmup 3s -rounds 1 \
	-pprof-dir "$OUT/fanout" -pprof-seconds 10 -json-out "$OUT/fanout.json"
redis_cpu "4c (both targets' rounds)" "$r0"
top_cum "fleetgate CPU profile during the fan-out (10 s): top functions, cumulative" "$OUT/fanout/fleetgate.cpu.pprof"

# Latency against load: the open-loop pairs again at lower rates, so that
# the report shows up to which rate each broker meets a latency target.
for rate in $PAIRS_SWEEP; do
	r0=$(cpu_seconds "${PS_REDIS_PID:-0}")
	log "4d. pairs, open loop at $rate msg/s in total: $PAIRS pairs, QoS 1 both ways, 1 round of $PAIRS_SWEEP_DURATION"
	"$BENCH" compare pairs \
		-target "fleetgate=$PS_FG_MQTT,pid=$PS_FG_PID" \
		"${BASE_TARGET[@]}" -target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
		-pairs "$PAIRS" -rate "$rate" -window 256 -size "$SIZE" "${persistent[@]}" \
		-duration "$PAIRS_SWEEP_DURATION" -warmup 3s -rounds 1 -json-out "$OUT/pairs-open-$rate.json"
	redis_cpu "4d at $rate msg/s (both targets)" "$r0"
done
stop "$PS_FG_PID"
stop "$MQ_PID"

# The pub/sub targets of the issue, read off this run's JSON results.
log "pub/sub targets, this run"
if command -v python3 >/dev/null; then
	python3 - "$OUT/pairs-open.json" "$OUT/pairs-closed.json" <<'PY'
import json, sys
def target(path, name):
    for t in json.load(open(path))["targets"]:
        if t["target"]["name"] == name:
            return t["pubsub"]
opened, closed = sys.argv[1], sys.argv[2]
fg = target(opened, "fleetgate")
if fg is not None:
    rate = fg["config"]["rate"]
    p99 = fg["latency"]["p99_ns"] / 1e6
    print(f"end-to-end p99 at {rate:g} msg/s: {p99:.2f} ms (target <= 10 ms: {'met' if p99 <= 10 else 'NOT met'})")
fg, mq = target(closed, "fleetgate"), target(closed, "mosquitto")
if fg is not None and mq is not None and mq["delivered_per_sec"] > 0:
    r = fg["delivered_per_sec"] / mq["delivered_per_sec"]
    print(f"closed-loop pairs: {fg['delivered_per_sec']:,.0f} against mosquitto's {mq['delivered_per_sec']:,.0f} deliveries/s = {r:.2f}x (target >= 0.5x: {'met' if r >= 0.5 else 'NOT met'})")
PY
else
	echo "python3 is not installed: read the targets off the tables above"
fi
fi

if section access; then
log "5. access control (issue 14): generating the fleet"
ACC=$WORK/access
"$BENCH" access-files -dir "$ACC" -identities "$ACCESS_IDENTITIES" -groups "$ACCESS_GROUPS" -rules "$ACCESS_RULES" \
	-tokens "$(( ACCESS_DEVICES > ACCESS_PUBLISHERS ? ACCESS_DEVICES : ACCESS_PUBLISHERS ))" \
	-passwords "$(( ACCESS_DEVICES > ACCESS_UNCACHED_DEVICES ? ACCESS_DEVICES : ACCESS_UNCACHED_DEVICES ))" \
	-password-cost "$ACCESS_PASSWORD_COST" -password-hashes "$ACCESS_PASSWORD_HASHES" -json-out "$OUT/access-files.json"
# mosquitto reads its password file after dropping root for its own user:
# the file and the directories above it must be readable by it.
chmod 711 "$WORK"
mkdir -p "$WORK/mosquitto-auth"
chmod 755 "$WORK/mosquitto-auth"
MQ_PASSWD=$WORK/mosquitto-auth/passwd
cp "$ACC/password.creds" "$MQ_PASSWD"
mosquitto_passwd -U "$MQ_PASSWD"
chmod 644 "$MQ_PASSWD"
echo "mosquitto password file: $(wc -l <"$MQ_PASSWD") users, hash \$$(head -1 "$MQ_PASSWD" | cut -d: -f2 | cut -d'$' -f2,3)\$... (\$7\$ is PBKDF2-SHA512, then the iterations)"
FG_JWT=(-auth.allow-anonymous=false -auth.jwt.key-files "$ACC/jwt-public.pem" -http.pprof)

log "5a. QoS 1 ingest with $ACCESS_RULES rules and $ACCESS_IDENTITIES identities against none: $ACCESS_PUBLISHERS JWT publishers on devices/%u/telemetry, window $WINDOW, $ACCESS_ROUNDS rounds of $ACCESS_DURATION"
start_fleetgate fleetgate-rules -- "${FG_JWT[@]}" -authz.rules-file "$ACC/rules.yaml"
RULES_PID=$FG_PID RULES_MQTT=$FG_MQTT RULES_HTTP=$FG_HTTP
start_fleetgate fleetgate-norules -- "${FG_JWT[@]}"
NORULES_PID=$FG_PID NORULES_MQTT=$FG_MQTT NORULES_HTTP=$FG_HTTP
# Both are profiled in their first round, so that the profiler's cost is the
# same on both sides.
"$BENCH" compare pub \
	-target "rules=$RULES_MQTT,pid=$RULES_PID,pprof=$RULES_HTTP,creds=$ACC/jwt.creds" \
	-target "norules=$NORULES_MQTT,pid=$NORULES_PID,pprof=$NORULES_HTTP,creds=$ACC/jwt.creds" \
	-baseline norules -qos 1 -publishers "$ACCESS_PUBLISHERS" -size "$SIZE" -window "$WINDOW" \
	-topic 'devices/%u/telemetry' -duration "$ACCESS_DURATION" -warmup 3s -rounds "$ACCESS_ROUNDS" \
	-pprof-dir "$OUT/access-ingest" -pprof-seconds 15 -json-out "$OUT/access-ingest.json"
log "where authorization shows in the profile of fleetgate-rules (cumulative)"
if [[ -s $OUT/access-ingest/rules.cpu.pprof ]]; then
	(cd "$ROOT" && go tool pprof -top -cum -nodecount=400 "$FG_DEV" "$OUT/access-ingest/rules.cpu.pprof" 2>/dev/null |
		grep -E 'Duration|Total samples|pkg/acl|[Aa]uthoriz|ingest\.\(\*Hook\)\.OnPublish|processPublish' | head -20) || true
fi
stop "$RULES_PID"
stop "$NORULES_PID"

log "5b. $ACCESS_DEVICES devices reconnecting, $ACCESS_CONCURRENCY at a time, $ACCESS_WARMUP_PASSES warm-up passes and 1 measured pass, $ACCESS_ROUNDS rounds"
# One fleetgate takes tokens, passwords (default cache) and anonymous
# clients, with the rules file: a mixed fleet.
start_fleetgate fleetgate-auth -- -auth.allow-anonymous=true -auth.jwt.key-files "$ACC/jwt-public.pem" \
	-auth.password-file "$ACC/passwords" -authz.rules-file "$ACC/rules.yaml" -http.pprof
AUTH_PID=$FG_PID AUTH_MQTT=$FG_MQTT AUTH_HTTP=$FG_HTTP
AUTH_REDIS_PID=$(pgrep -P "$AUTH_PID" redis-server | head -1 || true)
start_mosquitto mosquitto-password "$MQ_PASSWD"
MQP_PID=$MQ_PID MQP_ADDR=$MQ_ADDR
start_mosquitto mosquitto-anonymous
MQA_PID=$MQ_PID MQA_ADDR=$MQ_ADDR
r0=$(cpu_seconds "${AUTH_REDIS_PID:-0}")
"$BENCH" compare connect \
	-target "fleetgate-jwt=$AUTH_MQTT,pid=$AUTH_PID,pprof=$AUTH_HTTP,creds=$ACC/jwt.creds" \
	-target "fleetgate-password=$AUTH_MQTT,pid=$AUTH_PID,creds=$ACC/password.creds" \
	-target "fleetgate-anonymous=$AUTH_MQTT,pid=$AUTH_PID,pprof=$AUTH_HTTP" \
	-target "mosquitto-password=$MQP_ADDR,pid=$MQP_PID,creds=$ACC/password.creds" \
	-target "mosquitto-anonymous=$MQA_ADDR,pid=$MQA_PID" \
	-baseline mosquitto-anonymous -clients "$ACCESS_DEVICES" -connect-concurrency "$ACCESS_CONCURRENCY" \
	-warmup-passes "$ACCESS_WARMUP_PASSES" -passes 1 -rounds "$ACCESS_ROUNDS" \
	-pprof-dir "$OUT/access-connect" -pprof-seconds "$ACCESS_PPROF_SECONDS" -json-out "$OUT/access-connect.json"
PS_REDIS_PID=$AUTH_REDIS_PID redis_cpu "5b (the three fleetgate targets, warm-up passes included)" "$r0"
top_cum "fleetgate CPU profile while JWT devices reconnect ($ACCESS_PPROF_SECONDS s): top functions, cumulative" "$OUT/access-connect/fleetgate-jwt.cpu.pprof"
stop "$AUTH_PID"

log "5c. $ACCESS_UNCACHED_DEVICES devices with passwords, password cache off (bcrypt cost $ACCESS_PASSWORD_COST on every CONNECT), $ACCESS_CONCURRENCY at a time, $ACCESS_ROUNDS rounds"
start_fleetgate fleetgate-nocache -- -auth.allow-anonymous=false -auth.password-file "$ACC/passwords" \
	-auth.password-cache-size 0 -authz.rules-file "$ACC/rules.yaml"
"$BENCH" compare connect \
	-target "fleetgate-password-uncached=$FG_MQTT,pid=$FG_PID,creds=$ACC/password.creds" \
	-target "mosquitto-password=$MQP_ADDR,pid=$MQP_PID,creds=$ACC/password.creds" \
	-target "mosquitto-anonymous=$MQA_ADDR,pid=$MQA_PID" \
	-baseline mosquitto-password -clients "$ACCESS_UNCACHED_DEVICES" -connect-concurrency "$ACCESS_CONCURRENCY" \
	-passes 1 -rounds "$ACCESS_ROUNDS" -json-out "$OUT/access-connect-uncached.json"
# A pass of a few hundred devices lasts a few ms against mosquitto: one
# retransmitted SYN moves its rate a lot. The uncached rate is set against
# 5b's mosquitto figures below.
stop "$FG_PID"
stop "$MQP_PID"
stop "$MQA_PID"

log "access-control targets, this run"
if command -v python3 >/dev/null; then
	python3 - "$OUT/access-ingest.json" "$OUT/access-connect.json" "$OUT/access-connect-uncached.json" <<'PY'
import json, sys
def targets(path):
    return {t["target"]["name"]: t for t in json.load(open(path))["targets"]}
ingest, connect, uncached = (targets(p) for p in sys.argv[1:4])
r, n = ingest["rules"]["pub"]["acked_per_sec"], ingest["norules"]["pub"]["acked_per_sec"]
print(f"ingest with rules: {r:,.0f} against {n:,.0f} acked/s without = {r / n:.2f}x (target >= 0.95x: {'met' if r / n >= 0.95 else 'NOT met'})")
base = connect["mosquitto-anonymous"]["connect"]["connects_per_sec"]
for name in ["fleetgate-jwt", "fleetgate-password", "fleetgate-anonymous", "mosquitto-password"]:
    c = connect[name]["connect"]
    target = ""
    if name in ("fleetgate-jwt", "fleetgate-password"):
        target = f" (target >= 1.0x: {'met' if c['connects_per_sec'] >= base else 'NOT met'})"
    warm = [p["connects_per_sec"] for p in c["passes"] if p["warmup"]]
    print(f"{name}: {c['connects_per_sec']:,.0f} connects/s = {c['connects_per_sec'] / base:.2f}x mosquitto anonymous ({base:,.0f}/s){target}; "
          f"connack p50/p99 {c['connack']['p50_ns'] / 1e6:.1f}/{c['connack']['p99_ns'] / 1e6:.1f} ms; warm-up passes {', '.join(f'{w:,.0f}' for w in warm)}/s")
u = uncached["fleetgate-password-uncached"]["connect"]
mp = connect["mosquitto-password"]["connect"]["connects_per_sec"]
print(f"fleetgate-password-uncached: {u['connects_per_sec']:,.1f} connects/s = {u['connects_per_sec'] / base:.4f}x mosquitto anonymous, "
      f"{u['connects_per_sec'] / mp:.4f}x mosquitto with passwords (5b: {base:,.0f} and {mp:,.0f}/s); server cpu/connect {u['server']['cpu_per_message_ns'] / 1e6:.1f} ms")
PY
else
	echo "python3 is not installed: read the targets off the tables above"
fi
fi

# peak_rss_loop PID FILE: writes the highest VmRSS (kB) of PID seen so far to
# FILE every 0.1 s, until PID ends or the loop is killed.
peak_rss_loop() {
	local peak=0 rss
	while rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null) && [[ -n $rss ]]; do
		if ((rss > peak)); then
			peak=$rss
			echo "$peak" >"$2"
		fi
		sleep 0.1
	done
}

if section retained; then
log "6a. retained messages: $RETAINED_MESSAGES retained, then a wildcard SUBSCRIBE; fresh brokers at their queue bounds (fleetgate's defaults)"
start_fleetgate fleetgate-retained
RT_REDIS_PID=$(pgrep -P "$FG_PID" redis-server | head -1 || true)
start_mosquitto mosquitto-retained
r0=$(cpu_seconds "${RT_REDIS_PID:-0}")
"$BENCH" compare retained \
	-target "fleetgate=$FG_MQTT,pid=$FG_PID,metrics=$FG_HTTP" \
	-target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-messages "$RETAINED_MESSAGES" -size "$RETAINED_SIZE" -rounds 1 -json-out "$OUT/retained-default.json"
PS_REDIS_PID=$RT_REDIS_PID redis_cpu "6a (publishing and the SUBSCRIBE)" "$r0"
echo "fleetgate's counters of retained messages queued on SUBSCRIBE and of streams stopped at the queue bound:"
curl -sf "http://$FG_HTTP/metrics" | grep -E '^fleetgate_delivery_retained_' || echo "(none)"
stop "$FG_PID"
stop "$MQ_PID"

log "6b. retained messages: fresh brokers whose queue bound lets all $RETAINED_MESSAGES through, $RETAINED_ROUNDS rounds"
# shellcheck disable=SC2086 # the flags are a word list
start_fleetgate fleetgate-retained-queue -- $RETAINED_FG_FLAGS
RT_REDIS_PID=$(pgrep -P "$FG_PID" redis-server | head -1 || true)
MQ_EXTRA_CONF=$RETAINED_MQ_CONF start_mosquitto mosquitto-retained-queue
echo "mosquitto: $RETAINED_MQ_CONF"
RT_REDIS_PEAK=$WORK/retained-redis-peak-kb
RT_LOOP=
if [[ -n $RT_REDIS_PID ]]; then
	peak_rss_loop "$RT_REDIS_PID" "$RT_REDIS_PEAK" &
	RT_LOOP=$!
	PIDS+=("$RT_LOOP")
fi
r0=$(cpu_seconds "${RT_REDIS_PID:-0}")
"$BENCH" compare retained \
	-target "fleetgate=$FG_MQTT,pid=$FG_PID,metrics=$FG_HTTP" \
	-target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-messages "$RETAINED_MESSAGES" -size "$RETAINED_SIZE" -rounds "$RETAINED_ROUNDS" -json-out "$OUT/retained-queue.json"
PS_REDIS_PID=$RT_REDIS_PID redis_cpu "6b (publishing and the SUBSCRIBEs of $RETAINED_ROUNDS rounds)" "$r0"
if [[ -n $RT_REDIS_PID ]]; then
	echo "redis-server (child of fleetgate-dev; it holds the retained messages and the subscriber's queue): peak RSS $(($(cat "$RT_REDIS_PEAK" 2>/dev/null || echo 0) / 1024)) MiB over 6b, $(($(awk '/^VmRSS:/ {print $2}' "/proc/$RT_REDIS_PID/status") / 1024)) MiB now"
fi

log "6c. once more, 1 round, with a CPU profile of fleetgate from its wildcard SUBSCRIBE on ($RETAINED_PPROF_SECONDS s)"
"$BENCH" compare retained \
	-target "fleetgate=$FG_MQTT,pid=$FG_PID,metrics=$FG_HTTP,pprof=$FG_HTTP" \
	-target "mosquitto=$MQ_ADDR,pid=$MQ_PID" \
	-messages "$RETAINED_MESSAGES" -size "$RETAINED_SIZE" -rounds 1 \
	-pprof-dir "$OUT/retained" -pprof-seconds "$RETAINED_PPROF_SECONDS" -json-out "$OUT/retained-profile.json"
top_cum "fleetgate CPU profile from its wildcard SUBSCRIBE on ($RETAINED_PPROF_SECONDS s): top functions, cumulative" "$OUT/retained/fleetgate.cpu.pprof"
if [[ -n $RT_LOOP ]]; then
	stop "$RT_LOOP"
fi
stop "$FG_PID"
stop "$MQ_PID"

log "retained messages: fleetgate/mosquitto, this run"
if command -v python3 >/dev/null; then
	python3 - "$OUT/retained-default.json" "$OUT/retained-queue.json" <<'PY'
import json, sys
MiB = 1 << 20
for label, path in (("6a, queue bounds as configured", sys.argv[1]), ("6b, queue bound above the messages", sys.argv[2])):
    t = {x["target"]["name"]: x["retained"] for x in json.load(open(path))["targets"]}
    fg, mq = t["fleetgate"], t["mosquitto"]
    print(f"{label}:")
    for name, r in (("fleetgate", fg), ("mosquitto", mq)):
        print(f"  {name}: {r['unique']:,} of {r['expected']:,} arrived over {r['rounds']} round(s) ({r['end']}), duplicates {r['duplicates']}, "
              f"suback {r['suback_after_ns'] / 1e6:.1f} ms, first {r['first_after_ns'] / 1e6:.1f} ms, last {r['last_after_ns'] / 1e6:,.0f} ms, "
              f"{r['messages_per_sec']:,.0f}/s")
    last = fg["last_after_ns"] / mq["last_after_ns"] if mq["last_after_ns"] else float("nan")
    print(f"  time to the last message: {fg['last_after_ns'] / 1e6:,.0f} against {mq['last_after_ns'] / 1e6:,.0f} ms = {last:.2f}x")
    fm, mm = fg["memory"], mq["memory"]
    print(f"  peak RSS: {fm['peak_rss_bytes'] / MiB:.1f} against {mm['peak_rss_bytes'] / MiB:.1f} MiB = {fm['peak_rss_bytes'] / mm['peak_rss_bytes']:.2f}x; "
          f"growth during the SUBSCRIBE {(fm['peak_rss_bytes'] - fm['baseline_rss_bytes']) / MiB:.1f} against {(mm['peak_rss_bytes'] - mm['baseline_rss_bytes']) / MiB:.1f} MiB")
    if fm["heap_samples"]:
        print(f"  fleetgate's Go heap (heap_alloc): {fm['baseline_heap_alloc_bytes'] / MiB:.1f} MiB before, peak {fm['peak_heap_alloc_bytes'] / MiB:.1f} MiB "
              f"(+{(fm['peak_heap_alloc_bytes'] - fm['baseline_heap_alloc_bytes']) / MiB:.1f} MiB; {fm['heap_samples']} samples) = "
              f"{fm['peak_heap_alloc_bytes'] / mm['peak_rss_bytes']:.2f}x mosquitto's peak RSS; "
              f"GC goal (twice the live heap) {fm['baseline_next_gc_bytes'] / MiB:.1f} MiB before, peak {fm['peak_next_gc_bytes'] / MiB:.1f} MiB")
PY
else
	echo "python3 is not installed: read the ratios off the tables above"
fi
fi

log "done; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
