#!/usr/bin/env bash
# fleetgate vs mosquitto on this machine, in one run (docs/benchmarks.md):
#   1. QoS 1 ingest, closed loop: acked publishes/s and PUBACK latency, with a
#      20 s CPU profile of fleetgate taken during its first round;
#   2. QoS 1 ingest, open loop at a fixed rate both brokers sustain: latency at
#      equal load;
#   3. memory per idle connection, fresh processes: fleetgate with its
#      defaults, fleetgate tuned for idle memory, mosquitto.
# Everything runs on 127.0.0.1 on free ports, in a temporary directory, and
# is stopped on exit. Takes about 5 minutes.
#
# Knobs (environment): DURATION ROUNDS PUBLISHERS WINDOW SIZE OPEN_RATE
# IDLE_CLIENTS IDLE_SETTLE, FG_TUNED_FLAGS / FG_TUNED_ENV (the tuned idle variant),
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
	if "$FG_DEV" -help 2>&1 | grep -q -- -dev.redis-listen; then
		extra+=(-dev.redis-listen "127.0.0.1:${ports[3]}")
	fi
	env "${envs[@]}" "$FG_DEV" \
		-dev.data-dir "$WORK/$name-data" \
		-dev.kafka-addr "127.0.0.1:${ports[1]}" \
		-mqtt.tcp-addr "$FG_MQTT" -mqtt.ws-addr "" \
		-http.addr "$FG_HTTP" -log.level warn "${extra[@]}" "$@" \
		>"$WORK/$name.log" 2>&1 &
	FG_PID=$!
	PIDS+=("$FG_PID")
	for _ in $(seq 150); do
		if curl -sf "http://$FG_HTTP/readyz" >/dev/null; then
			echo "$name: pid $FG_PID, mqtt $FG_MQTT, http $FG_HTTP ${envs[*]} $*"
			return 0
		fi
		sleep 0.2
	done
	echo "$name did not become ready:" >&2
	cat "$WORK/$name.log" >&2
	return 1
}

# start_mosquitto NAME: Debian's mosquitto, persistence off. Sets MQ_PID,
# MQ_ADDR.
start_mosquitto() {
	local name=$1 port
	port=$("$BENCH" free-port)
	cat >"$WORK/$name.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
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
EOF
	mosquitto -c "$WORK/$name.conf" >"$WORK/$name.log" 2>&1 &
	MQ_PID=$!
	PIDS+=("$MQ_PID")
	MQ_ADDR=127.0.0.1:$port
	wait_port "$port"
	echo "$name: pid $MQ_PID, mqtt $MQ_ADDR"
}

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

log "done; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
