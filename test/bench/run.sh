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
#         with ACCESS_TLS=1 (about 2 minutes more) the same connects again
#         through both brokers' TLS listeners, as a fleet sends credentials
#         (a CA and a P-256 server certificate from fleetgate-bench
#         tls-files, verified by the clients, a full handshake each);
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
#   7. the fleet shape (issue 16; not in the default SECTIONS: SECTIONS=fleet,
#      about 13 minutes, 15 with FLEET_HAPROXY=1): fleetgate as in
#      production, each a process of its own (the Kafka-protocol broker,
#      fleetgate-dev -dev.kafka-only; redis-server with FLEET_REDIS_ARGS; one
#      frontend; one dispatcher), beside mosquitto, started in FLEET_ORDER.
#      fleetgate's CPU and RSS are those of frontend + dispatcher +
#      redis-server, each also listed; Kafka's are listed apart and not
#      counted (compare's pid=A+B+C,apart=K). The devices authenticate as
#      production demands (FLEET_AUTH=jwt, the default): each an identity
#      with an ES256 token, the frontend with a rules file of FLEET_RULES
#      rules over FLEET_IDENTITIES identities that confines each device to
#      devices/<identity>/#, mosquitto with the same devices' passwords and
#      an ACL of the same confinement; FLEET_AUTH=anonymous for anonymous
#      clients on both. 64-byte QoS 1 payloads (SIZE), one target after the
#      other:
#      a. FLEET_IDLE idle connections on the fresh processes: memory per
#         connection and the idle processes' CPU over FLEET_IDLE_SETTLE;
#         then, on fresh processes again, the same connections each first
#         publishing FLEET_IDLE_BURST messages back to back (devices that
#         report a batch and sleep);
#      b. for each N of FLEET_DEVICES: N devices × FLEET_DEVICE_RATE msg/s,
#         open loop: CPU per acked message, PUBACK p50/p99, and Kafka's
#         share of the wait (p50/p99 of the produce requests' round trip and
#         of the records' receipt to Kafka's ack, from the frontend's
#         /metrics);
#      c. for each N of FLEET_PAIRS: N pairs × FLEET_PAIR_RATE msg/s, open
#         loop: end-to-end p50/p99, CPU per delivery;
#      d. FLEET_CLOSED_PAIRS pairs, closed loop (as 4b): deliveries/s, acked
#         messages not delivered, the dispatcher's drops at a queue bound;
#      e. FLEET_CONNECT devices reconnecting with persistent sessions: CONNECT
#         rate, CONNACK p99, CPU per connect; and (shape "substorm") with
#         clean sessions, each subscribing to devices/<its id>/cmd/# after
#         its CONNACK: cycles/s, SUBACK p50/p99, CPU per cycle;
#      f. with FLEET_HAPROXY=1, FLEET_HAPROXY_DEVICES devices × 1 msg/s
#         through HAProxy (TCP, leastconn) to one frontend, then to two (a
#         second frontend started for it, same Kafka, Redis and dispatcher):
#         whether two nodes carry the load at the same CPU per message;
#      g. with FLEET_TLS=1 (about 7 minutes more), the fleet over TLS, as
#         devices connect (port 8883; a CA and an ECDSA P-256 server
#         certificate from fleetgate-bench tls-files, verified by the
#         clients; key exchange X25519; a full handshake per connection):
#         idle connections (after 7a), FLEET_TLS_DEVICES devices × 1 msg/s
#         (after 7b) and the persistent reconnect storm (after 7e), then the
#         storm again with each device resuming its TLS session (a ticket
#         from the warm-up pass; 7g');
#      with CPU profiles of the frontend and the dispatcher during
#      fleetgate's first round of each, then the targets and ratios, read
#      off the JSON results (needs python3).
# Everything runs on 127.0.0.1 on free ports, in a temporary directory, and
# is stopped on exit. Takes about 11 minutes (section 4 alone: 5½).
#
# Knobs (environment): SECTIONS (any of "ingest idle pubsub access retained
# fleet"; default "ingest idle pubsub"),
# DURATION ROUNDS PUBLISHERS WINDOW SIZE OPEN_RATE
# IDLE_CLIENTS IDLE_SETTLE, FG_TUNED_FLAGS / FG_TUNED_ENV (the tuned idle variant),
# PAIRS PAIRS_RATE PAIRS_WINDOW PAIRS_DURATION PAIRS_ROUNDS PAIRS_PERSISTENT
# PAIRS_SWEEP PAIRS_SWEEP_DURATION, FG_BASELINE_BIN (a fleetgate-dev binary of
# an earlier build, measured in section 4 beside the current one),
# FANOUT_SUBSCRIBERS FANOUT_RATE FANOUT_DURATION FANOUT_QOS,
# FG_PUBSUB_FLAGS (extra fleetgate-dev flags for section 4),
# ACCESS_IDENTITIES ACCESS_GROUPS ACCESS_RULES ACCESS_PUBLISHERS ACCESS_DURATION
# ACCESS_ROUNDS ACCESS_DEVICES ACCESS_UNCACHED_DEVICES ACCESS_CONCURRENCY ACCESS_WARMUP_PASSES
# ACCESS_PASSWORD_COST ACCESS_PASSWORD_HASHES ACCESS_PPROF_SECONDS ACCESS_TLS (section 5),
# RETAINED_MESSAGES RETAINED_SIZE RETAINED_ROUNDS RETAINED_FG_FLAGS
# RETAINED_MQ_CONF RETAINED_PPROF_SECONDS (section 6),
# FLEET_ORDER ("fleetgate mosquitto" or the reverse: which starts and runs
# first) FLEET_IDLE FLEET_IDLE_SETTLE FLEET_IDLE_BURST (messages each
# connection of 7a's second row publishes back to back first; 0: no such
# row) FLEET_DEVICES FLEET_DEVICE_RATE
# FLEET_DURATION FLEET_PAIRS FLEET_PAIR_RATE FLEET_PAIRS_DURATION FLEET_ROUNDS
# FLEET_CLOSED_PAIRS FLEET_CLOSED_WINDOW FLEET_CLOSED_ROUNDS FLEET_CONNECT
# FLEET_CONNECT_ROUNDS FLEET_PPROF_SECONDS FLEET_REDIS_ARGS FLEET_HAPROXY
# FLEET_HAPROXY_DEVICES FLEET_HAPROXY_ROUNDS, FLEET_TLS FLEET_TLS_DEVICES,
# FLEET_AUTH ("jwt" or "anonymous") FLEET_IDENTITIES FLEET_RULES,
# FLEET_SHAPES (which of a–e run;
# default "idle devices pairs closed storm substorm") (section 7), FRONTEND_BIN /
# DISPATCHER_BIN (section 7's binaries, else built),
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
ACCESS_TLS=${ACCESS_TLS:-0}
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
FLEET_ORDER=${FLEET_ORDER:-fleetgate mosquitto}
FLEET_IDLE=${FLEET_IDLE:-10000}
FLEET_IDLE_SETTLE=${FLEET_IDLE_SETTLE:-125s}
FLEET_IDLE_BURST=${FLEET_IDLE_BURST:-3}
FLEET_DEVICES=${FLEET_DEVICES:-2000 10000}
FLEET_DEVICE_RATE=${FLEET_DEVICE_RATE:-1}
FLEET_DURATION=${FLEET_DURATION:-20s}
FLEET_PAIRS=${FLEET_PAIRS:-300 1000}
FLEET_PAIR_RATE=${FLEET_PAIR_RATE:-10}
FLEET_PAIRS_DURATION=${FLEET_PAIRS_DURATION:-15s}
FLEET_ROUNDS=${FLEET_ROUNDS:-1}
FLEET_CLOSED_PAIRS=${FLEET_CLOSED_PAIRS:-$PAIRS}
FLEET_CLOSED_WINDOW=${FLEET_CLOSED_WINDOW:-$PAIRS_WINDOW}
FLEET_CLOSED_ROUNDS=${FLEET_CLOSED_ROUNDS:-2}
FLEET_CONNECT=${FLEET_CONNECT:-10000}
FLEET_CONNECT_ROUNDS=${FLEET_CONNECT_ROUNDS:-2}
FLEET_PPROF_SECONDS=${FLEET_PPROF_SECONDS:-10}
# As in production (docs/operations.md, docker-compose.yml): every write
# fsynced before Redis answers.
FLEET_REDIS_ARGS=${FLEET_REDIS_ARGS:---appendonly yes --appendfsync always}
FLEET_HAPROXY=${FLEET_HAPROXY:-0}
FLEET_HAPROXY_DEVICES=${FLEET_HAPROXY_DEVICES:-4000}
FLEET_HAPROXY_ROUNDS=${FLEET_HAPROXY_ROUNDS:-2}
FLEET_SHAPES=${FLEET_SHAPES:-idle devices pairs closed storm substorm}
FLEET_TLS=${FLEET_TLS:-0}
FLEET_TLS_DEVICES=${FLEET_TLS_DEVICES:-10000}
# How the fleet's devices authenticate: "jwt" (default, the production
# default of a frontend: credentials and a rules file) or "anonymous".
FLEET_AUTH=${FLEET_AUTH:-jwt}
FLEET_IDENTITIES=${FLEET_IDENTITIES:-100000}
FLEET_RULES=${FLEET_RULES:-1000}

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

# fleet_shape NAME: whether FLEET_SHAPES includes NAME (section 7).
fleet_shape() { [[ " $FLEET_SHAPES " == *" $1 "* ]]; }

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
if section fleet; then
	FRONTEND=${FRONTEND_BIN:-$WORK/bin/frontend}
	DISPATCHER=${DISPATCHER_BIN:-$WORK/bin/dispatcher}
	if [[ -z ${FRONTEND_BIN:-} ]]; then
		(cd "$ROOT" && go build -o "$FRONTEND" ./cmd/frontend)
	fi
	if [[ -z ${DISPATCHER_BIN:-} ]]; then
		(cd "$ROOT" && go build -o "$DISPATCHER" ./cmd/dispatcher)
	fi
	echo "frontend: $FRONTEND"
	echo "dispatcher: $DISPATCHER"
fi

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
	if [[ -n ${3:-} ]]; then
		access="$access
acl_file $3"
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

# wait_ready NAME HTTP LOG: waits until a fleetgate process answers
# http://HTTP/readyz, else prints its log and fails.
wait_ready() {
	for _ in $(seq 150); do
		if curl -sf "http://$2/readyz" >/dev/null; then
			return 0
		fi
		sleep 0.2
	done
	echo "$1 did not become ready:" >&2
	cat "$3" >&2
	return 1
}

# The production shape (section 7): each of the following starts one process
# of a fleetgate cluster, as test/cluster/harness_test.go does, with the
# product's defaults but for addresses, node ids and anonymous clients.
#
# start_kafka NAME: the Kafka-protocol broker alone (fleetgate-dev
# -dev.kafka-only: kfake, its data in a new directory). Sets KAFKA_PID,
# KAFKA_ADDR.
start_kafka() {
	local port
	port=$("$BENCH" free-port)
	KAFKA_ADDR=127.0.0.1:$port
	"$FG_DEV" -dev.kafka-only -dev.kafka-addr "$KAFKA_ADDR" -dev.data-dir "$WORK/$1-data" >"$WORK/$1.log" 2>&1 &
	KAFKA_PID=$!
	PIDS+=("$KAFKA_PID")
	wait_port "$port"
	echo "$1: pid $KAFKA_PID, kafka $KAFKA_ADDR"
}

# start_redis NAME: redis-server on a free port, persisted as
# FLEET_REDIS_ARGS says (by default as in production: every write fsynced,
# docs/operations.md). Sets REDIS_PID, REDIS_ADDR.
start_redis() {
	local port
	port=$("$BENCH" free-port)
	REDIS_ADDR=127.0.0.1:$port
	mkdir -p "$WORK/$1"
	# shellcheck disable=SC2086 # the arguments are a word list
	redis-server --bind 127.0.0.1 --port "$port" --dir "$WORK/$1" --save "" --daemonize no \
		--logfile "$WORK/$1.log" $FLEET_REDIS_ARGS &
	REDIS_PID=$!
	PIDS+=("$REDIS_PID")
	wait_port "$port"
	echo "$1: pid $REDIS_PID, redis $REDIS_ADDR, $FLEET_REDIS_ARGS"
}

# start_frontend NODE_ID: a frontend (cmd/frontend) against KAFKA_ADDR and
# REDIS_ADDR, anonymous clients allowed, /debug/pprof served. Sets FE_PID,
# FE_MQTT, FE_HTTP.
start_frontend() {
	local ports
	mapfile -t ports < <("$BENCH" free-port 2)
	FE_MQTT=127.0.0.1:${ports[0]}
	FE_HTTP=127.0.0.1:${ports[1]}
	"$FRONTEND" -node.id "$1" -kafka.brokers "$KAFKA_ADDR" -redis.addrs "$REDIS_ADDR" \
		-mqtt.tcp-addr "$FE_MQTT" -mqtt.ws-addr "" -http.addr "$FE_HTTP" -http.pprof \
		-auth.allow-anonymous=true -log.level warn ${FE_ARGS[@]+"${FE_ARGS[@]}"} >"$WORK/$1.log" 2>&1 &
	FE_PID=$!
	PIDS+=("$FE_PID")
	wait_ready "$1" "$FE_HTTP" "$WORK/$1.log"
	wait_port "${ports[0]}"
	echo "$1: pid $FE_PID, mqtt $FE_MQTT, http $FE_HTTP"
}

# start_dispatcher NAME: a dispatcher (cmd/dispatcher) against KAFKA_ADDR
# and REDIS_ADDR, /debug/pprof served. Sets DISP_PID, DISP_HTTP.
start_dispatcher() {
	DISP_HTTP=127.0.0.1:$("$BENCH" free-port)
	"$DISPATCHER" -kafka.client-id "$1" -kafka.brokers "$KAFKA_ADDR" -redis.addrs "$REDIS_ADDR" \
		-http.addr "$DISP_HTTP" -http.pprof -log.level warn >"$WORK/$1.log" 2>&1 &
	DISP_PID=$!
	PIDS+=("$DISP_PID")
	wait_ready "$1" "$DISP_HTTP" "$WORK/$1.log"
	echo "$1: pid $DISP_PID, http $DISP_HTTP"
}

# start_haproxy NAME MQTT,OPS...: HAProxy in TCP mode in front of the
# frontends given as mqtt-address,ops-address, balanced as
# deploy/haproxy/haproxy.cfg does (leastconn, /readyz checks). Sets LB_PID,
# LB_ADDR.
start_haproxy() {
	local name=$1 port servers="" i=0 fe
	shift
	port=$("$BENCH" free-port)
	LB_ADDR=127.0.0.1:$port
	for fe in "$@"; do
		i=$((i + 1))
		servers+="    server fe-$i ${fe%%,*} check port ${fe##*:} inter 2s fall 2 rise 2"$'\n'
	done
	cat >"$WORK/$name.cfg" <<CFG
global
    log stdout format raw local0 warning
    maxconn $((FLEET_HAPROXY_DEVICES * 2 + 1000))

defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    timeout queue 30s
    timeout check 3s
    option redispatch
    retries 3

frontend mqtt
    bind $LB_ADDR
    default_backend fleetgate_mqtt

backend fleetgate_mqtt
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
$servers
CFG
	haproxy -db -f "$WORK/$name.cfg" >"$WORK/$name.log" 2>&1 &
	LB_PID=$!
	PIDS+=("$LB_PID")
	wait_port "$port"
	echo "$name: pid $LB_PID, mqtt $LB_ADDR, in front of $*"
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

# top_cum TITLE PROFILE [BINARY]: the cumulative top of a CPU profile of
# fleetgate-dev (or of BINARY), then the flat one.
top_cum() {
	local bin=${3:-$FG_DEV}
	log "$1"
	if [[ -s $2 ]]; then
		(cd "$ROOT" && go tool pprof -top -cum -nodecount=40 "$bin" "$2" 2>/dev/null | sed -n '1,50p')
		log "same profile, flat"
		(cd "$ROOT" && go tool pprof -top -nodecount=25 "$bin" "$2" 2>/dev/null | sed -n '6,32p')
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
start_fleetgate fleetgate-norules -- "${FG_JWT[@]}" -authz.allow-all
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
ACCESS_FG_TLS=() ACCESS_TLS_DIR=
# A kept OUT may hold the TLS results of an earlier run: only this run's count.
rm -f "$OUT/access-connect-tls.json"
if [[ $ACCESS_TLS == 1 ]]; then
	# Readable by mosquitto, which drops root: not under WORK.
	ACCESS_TLS_DIR=$(mktemp -d /tmp/fleetgate-bench-tls.XXXXXX)
	chmod 755 "$ACCESS_TLS_DIR"
	"$BENCH" tls-files -dir "$ACCESS_TLS_DIR" >/dev/null
	AUTH_TLS=127.0.0.1:$("$BENCH" free-port)
	ACCESS_FG_TLS=(-mqtt.tls-addr "$AUTH_TLS" -mqtt.tls-cert-file "$ACCESS_TLS_DIR/server.pem" -mqtt.tls-key-file "$ACCESS_TLS_DIR/server-key.pem")
fi
# mosquitto_tls_conf ADDR: a TLS listener on ADDR for MQ_EXTRA_CONF (the
# password file, when given, covers every listener).
mosquitto_tls_conf() {
	printf 'listener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n' "${1#127.0.0.1:}" \
		"$ACCESS_TLS_DIR/ca.pem" "$ACCESS_TLS_DIR/server.pem" "$ACCESS_TLS_DIR/server-key.pem"
}
start_fleetgate fleetgate-auth -- -auth.allow-anonymous=true -auth.jwt.key-files "$ACC/jwt-public.pem" \
	-auth.password-file "$ACC/passwords" -authz.rules-file "$ACC/rules.yaml" -http.pprof "${ACCESS_FG_TLS[@]}"
AUTH_PID=$FG_PID AUTH_MQTT=$FG_MQTT AUTH_HTTP=$FG_HTTP
AUTH_REDIS_PID=$(pgrep -P "$AUTH_PID" redis-server | head -1 || true)
if [[ $ACCESS_TLS == 1 ]]; then
	MQP_TLS=127.0.0.1:$("$BENCH" free-port)
	MQ_EXTRA_CONF=$(mosquitto_tls_conf "$MQP_TLS")
fi
start_mosquitto mosquitto-password "$MQ_PASSWD"
MQP_PID=$MQ_PID MQP_ADDR=$MQ_ADDR
if [[ $ACCESS_TLS == 1 ]]; then
	MQA_TLS=127.0.0.1:$("$BENCH" free-port)
	MQ_EXTRA_CONF=$(mosquitto_tls_conf "$MQA_TLS")
fi
start_mosquitto mosquitto-anonymous
MQ_EXTRA_CONF=
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
if [[ $ACCESS_TLS == 1 ]]; then
	log "5b over TLS: the same $ACCESS_DEVICES devices through both brokers' TLS listeners, a full handshake per CONNECT, $ACCESS_CONCURRENCY at a time, 1 warm-up and 1 measured pass, $ACCESS_ROUNDS rounds"
	CA=$ACCESS_TLS_DIR/ca.pem
	"$BENCH" compare connect \
		-target "fleetgate-jwt=$AUTH_TLS,pid=$AUTH_PID,pprof=$AUTH_HTTP,creds=$ACC/jwt.creds,tls=$CA" \
		-target "fleetgate-password=$AUTH_TLS,pid=$AUTH_PID,creds=$ACC/password.creds,tls=$CA" \
		-target "fleetgate-anonymous=$AUTH_TLS,pid=$AUTH_PID,tls=$CA" \
		-target "mosquitto-password=$MQP_TLS,pid=$MQP_PID,creds=$ACC/password.creds,tls=$CA" \
		-target "mosquitto-anonymous=$MQA_TLS,pid=$MQA_PID,tls=$CA" \
		-baseline mosquitto-anonymous -clients "$ACCESS_DEVICES" -connect-concurrency "$ACCESS_CONCURRENCY" \
		-warmup-passes 1 -passes 1 -rounds "$ACCESS_ROUNDS" -client-prefix access-tls \
		-pprof-dir "$OUT/access-connect-tls" -pprof-seconds "$ACCESS_PPROF_SECONDS" -json-out "$OUT/access-connect-tls.json"
	top_cum "fleetgate CPU profile while JWT devices reconnect over TLS ($ACCESS_PPROF_SECONDS s): top functions, cumulative" "$OUT/access-connect-tls/fleetgate-jwt.cpu.pprof"
fi
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
if [[ -n $ACCESS_TLS_DIR ]]; then
	rm -rf "$ACCESS_TLS_DIR"
fi

log "access-control targets, this run"
if command -v python3 >/dev/null; then
	python3 - "$OUT/access-ingest.json" "$OUT/access-connect.json" "$OUT/access-connect-uncached.json" "$OUT/access-connect-tls.json" <<'PY'
import json, os, sys
def targets(path):
    return {t["target"]["name"]: t for t in json.load(open(path))["targets"]}
ingest, connect, uncached = (targets(p) for p in sys.argv[1:4])
r, n = ingest["rules"]["pub"]["acked_per_sec"], ingest["norules"]["pub"]["acked_per_sec"]
print(f"ingest with rules: {r:,.0f} against {n:,.0f} acked/s without = {r / n:.2f}x (target >= 0.95x: {'met' if r / n >= 0.95 else 'NOT met'})")
def connects(connect, over=""):
    base = connect["mosquitto-anonymous"]["connect"]["connects_per_sec"]
    for name in ["fleetgate-jwt", "fleetgate-password", "fleetgate-anonymous", "mosquitto-password"]:
        c = connect[name]["connect"]
        target = ""
        if name in ("fleetgate-jwt", "fleetgate-password"):
            target = f" (target >= 1.0x: {'met' if c['connects_per_sec'] >= base else 'NOT met'})"
        warm = [p["connects_per_sec"] for p in c["passes"] if p["warmup"]]
        print(f"{name}{over}: {c['connects_per_sec']:,.0f} connects/s = {c['connects_per_sec'] / base:.2f}x mosquitto anonymous{over} ({base:,.0f}/s){target}; "
              f"connack p50/p99 {c['connack']['p50_ns'] / 1e6:.1f}/{c['connack']['p99_ns'] / 1e6:.1f} ms; "
              f"server cpu/connect {c['server']['cpu_per_message_ns'] / 1e3:.0f} us; warm-up passes {', '.join(f'{w:,.0f}' for w in warm)}/s")
    return base
base = connects(connect)
if os.path.exists(sys.argv[4]):
    connects(targets(sys.argv[4]), " over TLS")
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

# fleet_drops: the dispatcher's deliveries dropped at a session's queue
# bound so far (fleetgate_dispatch_deliveries, outcome dropped_*).
fleet_drops() {
	curl -sf "http://$FLEET_DISP_HTTP/metrics" |
		awk '/^fleetgate_dispatch_deliveries[_a-z]*\{.*outcome="dropped_/ {n += $NF} END {printf "%d", n}'
}

# fleet_connections HTTP: the connections a frontend accepted so far.
fleet_connections() {
	curl -sf "http://$1/metrics" | awk '/^fleetgate_frontend_connections_total/ {n += $NF} END {printf "%d", n}'
}

# fleet_procs_start / fleet_procs_stop LABEL: the GOMAXPROCS in force in
# the frontend and the dispatcher (go_sched_gomaxprocs_threads;
# procs.adaptive fits it to the CPU in use), sampled every second while a
# shape runs, printed as one digit per sample. The samples cover the whole
# comparison, the baseline's turn (fleetgate idle) included.
fleet_gomaxprocs() {
	curl -sf --max-time 1 "http://$1/metrics" | awk '/^go_sched_gomaxprocs_threads / {printf "%d", $NF; f = 1} END {if (!f) printf "?"}'
}
fleet_procs_start() {
	FLEET_PROCS_FILE=$(mktemp)
	(while :; do
		echo "$(fleet_gomaxprocs "$FLEET_FE_HTTP") $(fleet_gomaxprocs "$FLEET_DISP_HTTP")" >> "$FLEET_PROCS_FILE"
		sleep 1
	done) &
	FLEET_PROCS_PID=$!
}
fleet_procs_stop() {
	kill "$FLEET_PROCS_PID" 2>/dev/null
	wait "$FLEET_PROCS_PID" 2>/dev/null || true
	echo "GOMAXPROCS each second during $1 (both targets' turns): frontend $(awk '{printf "%s", $1}' "$FLEET_PROCS_FILE"), dispatcher $(awk '{printf "%s", $2}' "$FLEET_PROCS_FILE")"
	rm -f "$FLEET_PROCS_FILE"
}

# fleet_histograms FILE: the latency histograms of a message's way
# through fleetgate, saved for fleet_latency_share: the frontend's produce
# requests' round trip to the broker and each record's receipt to Kafka's
# acknowledgement, the dispatcher's age of each record when it was handed
# over, and the frontend's acceptance of a message to its PUBLISH to a
# connected subscriber.
fleet_histograms() {
	{
		curl -sf "http://$FLEET_FE_HTTP/metrics" |
			grep -E '^(messaging_kafka_request_duration_seconds_bucket\{node_id="[0-9]+",request="Produce"|fleetgate_ingest_produce_latency_seconds_bucket|fleetgate_delivery_latency_seconds_bucket\{path="direct")'
		curl -sf "http://$FLEET_DISP_HTTP/metrics" | grep -E '^fleetgate_dispatch_record_age_seconds_bucket'
	} > "$1" || true
}
# fleet_latency_share LABEL BEFORE: p50 and p99 of each histogram over what
# happened since BEFORE (fleet_histograms), interpolated within buckets as
# Prometheus's histogram_quantile does: how much of a PUBACK's wait is the
# broker's answer, and how much records wait for the requests ahead of
# them (docs/benchmarks.md, "Where a PUBACK waits at 10,000 devices"); and
# with subscribers, how much of the end-to-end latency the load generator
# measures is spent inside fleetgate, and before the hand-over to the
# frontends (docs/benchmarks.md, "Where the 300 pairs' end-to-end p99 goes").
fleet_latency_share() {
	local after
	after=$(mktemp)
	fleet_histograms "$after"
	awk -v label="$1" '
		function le(line) { sub(/.*le="/, "", line); sub(/".*/, "", line); return line == "+Inf" ? 1e9 : line + 0 }
		function name(line) {
			if (line ~ /^messaging/) return "produce requests, round trip to the broker"
			if (line ~ /^fleetgate_ingest/) return "records, receipt to Kafka ack"
			if (line ~ /^fleetgate_dispatch/) return "records, produce to hand-over by the dispatcher"
			return "messages, acceptance to PUBLISH to a connected subscriber"
		}
		# (Not FNR == NR: a histogram not exported yet leaves BEFORE empty.)
		FILENAME == ARGV[1] { before[$1] = $NF; next }
		{ n = name($1); b = le($1); c[n, b] += $NF - before[$1]; if (!((n, b) in seen)) { seen[n, b] = 1; bounds[n] = bounds[n] " " b } }
		END {
			out = ""
			for (n in bounds) {
				k = split(substr(bounds[n], 2), bs, " ")
				total = c[n, 1e9]
				if (total <= 0) continue
				part = sprintf("%s (%d):", n, total)
				for (q = 1; q <= 2; q++) {
					want = (q == 1 ? 0.5 : 0.99) * total
					prev = 0; prevc = 0
					for (i = 1; i <= k; i++) {
						if (c[n, bs[i]] >= want) {
							v = bs[i] == 1e9 ? prev : prev + (bs[i] - prev) * (want - prevc) / (c[n, bs[i]] - prevc)
							break
						}
						prev = bs[i]; prevc = c[n, bs[i]]
					}
					part = part sprintf(" p%s %.2f ms", q == 1 ? "50" : "99", v * 1000)
				}
				out = out "; " part
			}
			printf "where the time goes during %s (fleetgate'"'"'s turns)%s\n", label, out
		}' "$2" "$after"
	rm -f "$after" "$2"
}

if section fleet; then
log "7. the fleet shape (issue 16): fleetgate as in production, beside mosquitto; started in the order $FLEET_ORDER"
# One process each: the Kafka-protocol broker (reported apart, not counted),
# redis-server, a frontend, a dispatcher. The frontend's and the
# dispatcher's CPU profiles are taken during fleetgate's first round of each
# shape.
if [[ $FLEET_TLS == 1 ]]; then
	# Readable by mosquitto, which drops root: not under WORK.
	FLEET_TLS_DIR=$(mktemp -d /tmp/fleetgate-bench-tls.XXXXXX)
	chmod 755 "$FLEET_TLS_DIR"
	"$BENCH" tls-files -dir "$FLEET_TLS_DIR" >/dev/null
fi
# The fleet authenticates as production does (FLEET_AUTH=jwt): every device
# an identity with an ES256 token, a rules file of FLEET_RULES rules over
# FLEET_IDENTITIES identities (access-files, as section 5) that confines
# each device to devices/<its identity>/#; mosquitto the same devices with
# their passwords (PBKDF2, mosquitto_passwd) and an ACL of the same
# confinement. The devices publish to devices/<identity>/telemetry, the
# pairs (one identity each) use devices/<identity>/pairs/<run>, the
# clean-session storm subscribes to devices/<identity>/commands/#.
FLEET_FE_AUTH=() FLEET_FG_CREDS= FLEET_MQ_CREDS= FLEET_MQ_PASSWD= FLEET_MQ_ACL=
FLEET_PUB_TOPIC=() FLEET_PAIR_TOPIC=() FLEET_SUB_FILTER='devices/%c/cmd/#'
case $FLEET_AUTH in
jwt)
	# The most clients a shape that runs connects at once.
	fleet_clients=0 fleet_sizes=""
	fleet_shape idle && fleet_sizes+=" $FLEET_IDLE"
	fleet_shape devices && fleet_sizes+=" $FLEET_DEVICES"
	fleet_shape devices && [[ $FLEET_TLS == 1 ]] && fleet_sizes+=" $FLEET_TLS_DEVICES"
	fleet_shape pairs && fleet_sizes+=" $FLEET_PAIRS"
	fleet_shape closed && fleet_sizes+=" $FLEET_CLOSED_PAIRS"
	{ fleet_shape storm || fleet_shape substorm; } && fleet_sizes+=" $FLEET_CONNECT"
	[[ $FLEET_HAPROXY == 1 ]] && fleet_sizes+=" $FLEET_HAPROXY_DEVICES"
	for n in $fleet_sizes; do
		fleet_clients=$((n > fleet_clients ? n : fleet_clients))
	done
	if ((2 * fleet_clients > FLEET_IDENTITIES)); then
		# The rules for single devices pick from the upper half of the
		# identities; the fleet connects as the first ones.
		echo "FLEET_IDENTITIES ($FLEET_IDENTITIES) must be at least twice the largest fleet ($fleet_clients)" >&2
		exit 2
	fi
	FLEET_ACC=$WORK/fleet-access
	log "7. generating the fleet's identities: $FLEET_IDENTITIES identities, $FLEET_RULES rules, $fleet_clients tokens and passwords"
	"$BENCH" access-files -dir "$FLEET_ACC" -identities "$FLEET_IDENTITIES" -rules "$FLEET_RULES" \
		-tokens "$fleet_clients" -passwords "$fleet_clients" -password-cost 4 -json-out "$OUT/fleet-access-files.json" >/dev/null
	# mosquitto reads its files after dropping root for its own user.
	chmod 711 "$WORK"
	mkdir -p "$WORK/fleet-mosquitto-auth"
	chmod 755 "$WORK/fleet-mosquitto-auth"
	FLEET_MQ_PASSWD=$WORK/fleet-mosquitto-auth/passwd FLEET_MQ_ACL=$WORK/fleet-mosquitto-auth/acl
	cp "$FLEET_ACC/password.creds" "$FLEET_MQ_PASSWD"
	mosquitto_passwd -U "$FLEET_MQ_PASSWD"
	echo "pattern readwrite devices/%u/#" >"$FLEET_MQ_ACL"
	chmod 644 "$FLEET_MQ_PASSWD" "$FLEET_MQ_ACL"
	FLEET_FE_AUTH=(-auth.allow-anonymous=false -auth.jwt.key-files "$FLEET_ACC/jwt-public.pem" -authz.rules-file "$FLEET_ACC/rules.yaml")
	FLEET_FG_CREDS=",creds=$FLEET_ACC/jwt.creds" FLEET_MQ_CREDS=",creds=$FLEET_ACC/password.creds"
	FLEET_PUB_TOPIC=(-topic 'devices/%u/telemetry') FLEET_PAIR_TOPIC=(-topic 'devices/%u/pairs/%r')
	FLEET_SUB_FILTER='devices/%u/commands/#'
	echo "fleetgate: JWT (ES256) and $FLEET_ACC/rules.yaml; mosquitto: $(wc -l <"$FLEET_MQ_PASSWD") users in a password file and the ACL 'pattern readwrite devices/%u/#'"
	;;
anonymous)
	echo "anonymous devices (FLEET_AUTH=anonymous): not the production default of a frontend"
	;;
*)
	echo "FLEET_AUTH: jwt or anonymous" >&2
	exit 2
	;;
esac
# fleet_frontend NAME: the fleet's frontend (with its TLS listener on
# FLEET_FE_TLS under FLEET_TLS=1) against the fleet's Kafka and Redis.
fleet_frontend() {
	FE_ARGS=(${FLEET_FE_AUTH[@]+"${FLEET_FE_AUTH[@]}"})
	if [[ $FLEET_TLS == 1 ]]; then
		FE_ARGS+=(-mqtt.tls-addr "$FLEET_FE_TLS" -mqtt.tls-cert-file "$FLEET_TLS_DIR/server.pem" -mqtt.tls-key-file "$FLEET_TLS_DIR/server-key.pem")
	fi
	start_frontend "$1"
	FE_ARGS=()
	FLEET_FE_PID=$FE_PID FLEET_FE_MQTT=$FE_MQTT FLEET_FE_HTTP=$FE_HTTP
}
# fleet_mosquitto NAME: the fleet's mosquitto (with its TLS listener on
# FLEET_MQ_TLS under FLEET_TLS=1).
fleet_mosquitto() {
	if [[ $FLEET_TLS == 1 ]]; then
		MQ_EXTRA_CONF="listener ${FLEET_MQ_TLS#127.0.0.1:} 127.0.0.1
cafile $FLEET_TLS_DIR/ca.pem
certfile $FLEET_TLS_DIR/server.pem
keyfile $FLEET_TLS_DIR/server-key.pem"
	fi
	start_mosquitto "$1" "$FLEET_MQ_PASSWD" "$FLEET_MQ_ACL"
	MQ_EXTRA_CONF=
}
if [[ $FLEET_TLS == 1 ]]; then
	FLEET_FE_TLS=127.0.0.1:$("$BENCH" free-port)
	FLEET_MQ_TLS=127.0.0.1:$("$BENCH" free-port)
fi
for who in $FLEET_ORDER; do
	case $who in
	fleetgate)
		start_kafka fleet-kafka
		start_redis fleet-redis
		start_dispatcher fleet-dispatcher
		FLEET_DISP_PID=$DISP_PID FLEET_DISP_HTTP=$DISP_HTTP
		fleet_frontend fleet-fe-1
		;;
	mosquitto)
		fleet_mosquitto mosquitto-fleet
		;;
	*)
		echo "FLEET_ORDER: fleetgate and mosquitto, in either order" >&2
		exit 2
		;;
	esac
done
# fleet_targets [PPROF]: the two targets in FLEET_ORDER; with PPROF,
# fleetgate's frontend and dispatcher are profiled.
fleet_targets() {
	local who
	for who in $FLEET_ORDER; do
		if [[ $who == fleetgate ]]; then
			echo "-target"
			echo "$FLEET_FG${1:+$FLEET_PPROF}"
		else
			echo "-target"
			echo "$FLEET_MQ"
		fi
	done
}
# fleet_all_targets: every target list of the shapes, from the processes
# running now.
fleet_all_targets() {
	FLEET_PROCS="pid=$FLEET_FE_PID+$FLEET_DISP_PID+$REDIS_PID,apart=$KAFKA_PID"
	FLEET_FG="fleetgate=$FLEET_FE_MQTT,$FLEET_PROCS$FLEET_FG_CREDS"
	FLEET_PPROF=",pprof=$FLEET_FE_HTTP+$FLEET_DISP_HTTP"
	FLEET_MQ="mosquitto=$MQ_ADDR,pid=$MQ_PID$FLEET_MQ_CREDS"
	mapfile -t FLEET_TARGETS < <(fleet_targets)
	mapfile -t FLEET_TARGETS_PPROF < <(fleet_targets pprof)
	if [[ $FLEET_TLS == 1 ]]; then
		# The same processes, through their TLS listeners.
		FLEET_FG="fleetgate=$FLEET_FE_TLS,$FLEET_PROCS,tls=$FLEET_TLS_DIR/ca.pem$FLEET_FG_CREDS"
		FLEET_MQ="mosquitto=$FLEET_MQ_TLS,pid=$MQ_PID,tls=$FLEET_TLS_DIR/ca.pem$FLEET_MQ_CREDS"
		mapfile -t FLEET_TARGETS_TLS < <(fleet_targets)
		mapfile -t FLEET_TARGETS_TLS_PPROF < <(fleet_targets pprof)
		echo "over TLS: fleetgate $FLEET_FE_TLS, mosquitto $FLEET_MQ_TLS (CA $FLEET_TLS_DIR/ca.pem)"
	fi
	echo "fleetgate's processes: frontend $FLEET_FE_PID, dispatcher $FLEET_DISP_PID, redis-server $REDIS_PID (counted); kafka $KAFKA_PID (apart)"
	echo "mosquitto: pid $MQ_PID"
}
fleet_all_targets
FLEET_OUT=$OUT/fleet
mkdir -p "$FLEET_OUT"

# fleet_fresh_brokers NAME: a fresh frontend and mosquitto (the same
# listeners, Kafka, Redis and dispatcher) for another idle row: the memory
# the previous row's connections freed would otherwise count in the next
# row's baseline and hide its connections.
fleet_fresh_brokers() {
	stop "$FLEET_FE_PID"
	stop "$MQ_PID"
	for who in $FLEET_ORDER; do
		if [[ $who == fleetgate ]]; then fleet_frontend "fleet-fe-1-$1"; else fleet_mosquitto "mosquitto-fleet-$1"; fi
	done
	fleet_all_targets
}

# Fresh processes first: memory per connection is read against the RSS
# before the connections, which a Go heap grown by earlier shapes hides.
if fleet_shape idle; then
	log "7a. $FLEET_IDLE idle connections, one target after the other (one bench process holds them), settle $FLEET_IDLE_SETTLE"
	"$BENCH" compare idle "${FLEET_TARGETS[@]}" -baseline mosquitto \
		-clients "$FLEET_IDLE" -rounds 1 -settle "$FLEET_IDLE_SETTLE" -json-out "$FLEET_OUT/idle.json"
	if ((FLEET_IDLE_BURST > 0)); then
		log "7a. again, each connection first publishing $FLEET_IDLE_BURST QoS 1 messages back to back (a device reporting a batch, then asleep), settle $FLEET_IDLE_SETTLE"
		fleet_fresh_brokers burst-idle
		"$BENCH" compare idle "${FLEET_TARGETS[@]}" -baseline mosquitto \
			-clients "$FLEET_IDLE" -rounds 1 -settle "$FLEET_IDLE_SETTLE" -client-prefix fleet-burst-idle \
			-burst "$FLEET_IDLE_BURST" -burst-topic "devices/%u/telemetry" -json-out "$FLEET_OUT/burst-idle.json"
	fi
	if [[ $FLEET_TLS == 1 ]]; then
		log "7g. over TLS: $FLEET_IDLE idle connections, one target after the other, settle $FLEET_IDLE_SETTLE"
		fleet_fresh_brokers tls-idle
		"$BENCH" compare idle "${FLEET_TARGETS_TLS[@]}" -baseline mosquitto \
			-clients "$FLEET_IDLE" -rounds 1 -settle "$FLEET_IDLE_SETTLE" -client-prefix fleet-tls-idle -json-out "$FLEET_OUT/tls-idle.json"
	fi
fi

if fleet_shape devices; then
	for n in $FLEET_DEVICES; do
		rate=$((n * FLEET_DEVICE_RATE))
		log "7b. $n devices × $FLEET_DEVICE_RATE msg/s, open loop ($rate msg/s in total), QoS 1, $SIZE-byte payloads, $FLEET_ROUNDS round(s) of $FLEET_DURATION"
		fleet_procs_start
		hist0=$(mktemp)
		fleet_histograms "$hist0"
		"$BENCH" compare pub "${FLEET_TARGETS_PPROF[@]}" -baseline mosquitto \
			-qos 1 -publishers "$n" -rate "$rate" -window 64 -size "$SIZE" -client-prefix "fleet-dev-$n" ${FLEET_PUB_TOPIC[@]+"${FLEET_PUB_TOPIC[@]}"} \
			-duration "$FLEET_DURATION" -warmup 3s -rounds "$FLEET_ROUNDS" \
			-pprof-dir "$FLEET_OUT/devices-$n" -pprof-seconds "$FLEET_PPROF_SECONDS" -json-out "$FLEET_OUT/devices-$n.json"
		fleet_procs_stop "$n devices"
		fleet_latency_share "$n devices" "$hist0"
		top_cum "frontend CPU profile, $n devices ($FLEET_PPROF_SECONDS s)" "$FLEET_OUT/devices-$n/fleetgate.cpu.pprof" "$FRONTEND"
		top_cum "dispatcher CPU profile, $n devices ($FLEET_PPROF_SECONDS s)" "$FLEET_OUT/devices-$n/fleetgate.2.cpu.pprof" "$DISPATCHER"
	done
	if [[ $FLEET_TLS == 1 ]]; then
		n=$FLEET_TLS_DEVICES
		rate=$((n * FLEET_DEVICE_RATE))
		log "7g. over TLS: $n devices × $FLEET_DEVICE_RATE msg/s, open loop ($rate msg/s in total), QoS 1, $SIZE-byte payloads, $FLEET_ROUNDS round(s) of $FLEET_DURATION"
		"$BENCH" compare pub "${FLEET_TARGETS_TLS_PPROF[@]}" -baseline mosquitto \
			-qos 1 -publishers "$n" -rate "$rate" -window 64 -size "$SIZE" -client-prefix "fleet-tls-dev-$n" ${FLEET_PUB_TOPIC[@]+"${FLEET_PUB_TOPIC[@]}"} \
			-duration "$FLEET_DURATION" -warmup 3s -rounds "$FLEET_ROUNDS" \
			-pprof-dir "$FLEET_OUT/tls-devices" -pprof-seconds "$FLEET_PPROF_SECONDS" -json-out "$FLEET_OUT/tls-devices.json"
		top_cum "frontend CPU profile, $n devices over TLS ($FLEET_PPROF_SECONDS s)" "$FLEET_OUT/tls-devices/fleetgate.cpu.pprof" "$FRONTEND"
	fi
fi

if fleet_shape pairs; then
	for n in $FLEET_PAIRS; do
		rate=$((n * FLEET_PAIR_RATE))
		log "7c. $n pairs × $FLEET_PAIR_RATE msg/s, open loop ($rate msg/s in total), QoS 1 both ways, $FLEET_ROUNDS round(s) of $FLEET_PAIRS_DURATION"
		fleet_procs_start
		hist0=$(mktemp)
		fleet_histograms "$hist0"
		"$BENCH" compare pairs "${FLEET_TARGETS_PPROF[@]}" -baseline mosquitto \
			-pairs "$n" -rate "$rate" -window 256 -size "$SIZE" -client-prefix "fleet-pairs-$n" ${FLEET_PAIR_TOPIC[@]+"${FLEET_PAIR_TOPIC[@]}"} \
			-duration "$FLEET_PAIRS_DURATION" -warmup 3s -rounds "$FLEET_ROUNDS" \
			-pprof-dir "$FLEET_OUT/pairs-$n" -pprof-seconds "$FLEET_PPROF_SECONDS" -json-out "$FLEET_OUT/pairs-$n.json"
		fleet_procs_stop "$n pairs"
		fleet_latency_share "$n pairs" "$hist0"
		top_cum "frontend CPU profile, $n pairs ($FLEET_PPROF_SECONDS s)" "$FLEET_OUT/pairs-$n/fleetgate.cpu.pprof" "$FRONTEND"
		top_cum "dispatcher CPU profile, $n pairs ($FLEET_PPROF_SECONDS s)" "$FLEET_OUT/pairs-$n/fleetgate.2.cpu.pprof" "$DISPATCHER"
	done
fi

if fleet_shape closed; then
	log "7d. pairs, closed loop: $FLEET_CLOSED_PAIRS pairs, $FLEET_CLOSED_WINDOW in flight end to end per pair, $FLEET_CLOSED_ROUNDS rounds of $FLEET_PAIRS_DURATION"
	drops0=$(fleet_drops)
	fleet_procs_start
	"$BENCH" compare pairs "${FLEET_TARGETS_PPROF[@]}" -baseline mosquitto \
		-pairs "$FLEET_CLOSED_PAIRS" -window "$FLEET_CLOSED_WINDOW" -size "$SIZE" -client-prefix fleet-closed ${FLEET_PAIR_TOPIC[@]+"${FLEET_PAIR_TOPIC[@]}"} \
		-duration "$FLEET_PAIRS_DURATION" -warmup 3s -rounds "$FLEET_CLOSED_ROUNDS" \
		-pprof-dir "$FLEET_OUT/closed" -pprof-seconds "$FLEET_PPROF_SECONDS" -json-out "$FLEET_OUT/closed.json"
	fleet_procs_stop "the closed loop"
	drops1=$(fleet_drops)
	echo "fleetgate: deliveries dropped at a session's queue bound during 7d (dispatcher, fleetgate_dispatch_deliveries dropped_*): $((drops1 - drops0))"
	echo "$((drops1 - drops0))" >"$FLEET_OUT/closed-drops"
	top_cum "frontend CPU profile, closed-loop pairs ($FLEET_PPROF_SECONDS s)" "$FLEET_OUT/closed/fleetgate.cpu.pprof" "$FRONTEND"
	top_cum "dispatcher CPU profile, closed-loop pairs ($FLEET_PPROF_SECONDS s)" "$FLEET_OUT/closed/fleetgate.2.cpu.pprof" "$DISPATCHER"
fi

if fleet_shape storm; then
	log "7e. reconnect storm: $FLEET_CONNECT devices with persistent sessions, 64 at a time, 1 warm-up pass (creates the sessions) and 1 measured pass (resumes them), $FLEET_CONNECT_ROUNDS rounds"
	fleet_procs_start
	"$BENCH" compare connect "${FLEET_TARGETS_PPROF[@]}" -baseline mosquitto \
		-clients "$FLEET_CONNECT" -connect-concurrency 64 -persistent -warmup-passes 1 -passes 1 \
		-rounds "$FLEET_CONNECT_ROUNDS" -client-prefix fleet-storm \
		-pprof-dir "$FLEET_OUT/connect" -pprof-seconds 2 -json-out "$FLEET_OUT/connect.json"
	fleet_procs_stop "the reconnect storm"
	top_cum "frontend CPU profile, reconnect storm (2 s)" "$FLEET_OUT/connect/fleetgate.cpu.pprof" "$FRONTEND"
	if [[ $FLEET_TLS == 1 ]]; then
		log "7g. over TLS: reconnect storm of $FLEET_CONNECT devices with persistent sessions, 64 at a time, a full TLS handshake per connection, 1 warm-up and 1 measured pass, $FLEET_CONNECT_ROUNDS rounds"
		"$BENCH" compare connect "${FLEET_TARGETS_TLS_PPROF[@]}" -baseline mosquitto \
			-clients "$FLEET_CONNECT" -connect-concurrency 64 -persistent -warmup-passes 1 -passes 1 \
			-rounds "$FLEET_CONNECT_ROUNDS" -client-prefix fleet-tls-storm \
			-pprof-dir "$FLEET_OUT/tls-connect" -pprof-seconds 2 -json-out "$FLEET_OUT/tls-connect.json"
		top_cum "frontend CPU profile, reconnect storm over TLS (2 s)" "$FLEET_OUT/tls-connect/fleetgate.cpu.pprof" "$FRONTEND"
		log "7g'. over TLS, resuming: the same storm, each device resuming the TLS session of its warm-up pass (a session ticket) instead of a full handshake, $FLEET_CONNECT_ROUNDS rounds"
		"$BENCH" compare connect "${FLEET_TARGETS_TLS[@]}" -baseline mosquitto \
			-clients "$FLEET_CONNECT" -connect-concurrency 64 -persistent -tls-resume -warmup-passes 1 -passes 1 \
			-rounds "$FLEET_CONNECT_ROUNDS" -client-prefix fleet-tls-resume -json-out "$FLEET_OUT/tls-resume-connect.json"
	fi
fi

if fleet_shape substorm; then
	log "7e'. reconnect storm with clean sessions: $FLEET_CONNECT devices, 64 at a time, each subscribes to $FLEET_SUB_FILTER after its CONNACK and leaves after the SUBACK (a clean session subscribes again at every CONNECT), 1 warm-up and 1 measured pass, $FLEET_CONNECT_ROUNDS rounds"
	"$BENCH" compare connect "${FLEET_TARGETS_PPROF[@]}" -baseline mosquitto \
		-clients "$FLEET_CONNECT" -connect-concurrency 64 -subscribe "$FLEET_SUB_FILTER" -warmup-passes 1 -passes 1 \
		-rounds "$FLEET_CONNECT_ROUNDS" -client-prefix fleet-substorm \
		-pprof-dir "$FLEET_OUT/substorm" -pprof-seconds 2 -json-out "$FLEET_OUT/substorm.json"
	top_cum "frontend CPU profile, reconnect storm with SUBSCRIBE (2 s)" "$FLEET_OUT/substorm/fleetgate.cpu.pprof" "$FRONTEND"
	top_cum "dispatcher CPU profile, reconnect storm with SUBSCRIBE (2 s)" "$FLEET_OUT/substorm/fleetgate.2.cpu.pprof" "$DISPATCHER"
fi

if [[ $FLEET_HAPROXY == 1 ]]; then
	log "7f. capacity check: $FLEET_HAPROXY_DEVICES devices × $FLEET_DEVICE_RATE msg/s through HAProxy to one frontend, then to two (leastconn), same Kafka, Redis and dispatcher; $FLEET_HAPROXY_ROUNDS rounds of $FLEET_DURATION"
	stop "$MQ_PID" # not measured here
	FE_ARGS=(${FLEET_FE_AUTH[@]+"${FLEET_FE_AUTH[@]}"})
	start_frontend fleet-fe-2
	FE_ARGS=()
	FLEET_FE2_PID=$FE_PID FLEET_FE2_MQTT=$FE_MQTT FLEET_FE2_HTTP=$FE_HTTP
	start_haproxy fleet-lb-one "$FLEET_FE_MQTT,$FLEET_FE_HTTP"
	LB1_PID=$LB_PID LB1_ADDR=$LB_ADDR
	start_haproxy fleet-lb-two "$FLEET_FE_MQTT,$FLEET_FE_HTTP" "$FLEET_FE2_MQTT,$FLEET_FE2_HTTP"
	LB2_PID=$LB_PID LB2_ADDR=$LB_ADDR
	rate=$((FLEET_HAPROXY_DEVICES * FLEET_DEVICE_RATE))
	conns1=$(fleet_connections "$FLEET_FE_HTTP")
	"$BENCH" compare pub \
		-target "one-frontend=$LB1_ADDR,pid=$FLEET_FE_PID+$FLEET_DISP_PID+$REDIS_PID,apart=$KAFKA_PID+$LB1_PID$FLEET_FG_CREDS" \
		-target "two-frontends=$LB2_ADDR,pid=$FLEET_FE_PID+$FLEET_FE2_PID+$FLEET_DISP_PID+$REDIS_PID,apart=$KAFKA_PID+$LB2_PID$FLEET_FG_CREDS" \
		-baseline one-frontend -qos 1 -publishers "$FLEET_HAPROXY_DEVICES" -rate "$rate" -window 64 -size "$SIZE" ${FLEET_PUB_TOPIC[@]+"${FLEET_PUB_TOPIC[@]}"} \
		-client-prefix fleet-lb -duration "$FLEET_DURATION" -warmup 3s -rounds "$FLEET_HAPROXY_ROUNDS" \
		-json-out "$FLEET_OUT/haproxy.json"
	echo "connections accepted during 7f (fleetgate_frontend_connections_total): fleet-fe-1 $(($(fleet_connections "$FLEET_FE_HTTP") - conns1)) (both targets), fleet-fe-2 $(fleet_connections "$FLEET_FE2_HTTP") (two-frontends only)"
	stop "$LB1_PID"
	stop "$LB2_PID"
	stop "$FLEET_FE2_PID"
fi
stop "$FLEET_FE_PID"
stop "$FLEET_DISP_PID"
stop "$REDIS_PID"
stop "$KAFKA_PID"
stop "$MQ_PID"
if [[ -n ${FLEET_TLS_DIR:-} ]]; then
	rm -rf "$FLEET_TLS_DIR"
fi

log "fleet shape: fleetgate (frontend + dispatcher + redis-server; Kafka apart) against mosquitto, this run"
if command -v python3 >/dev/null; then
	python3 - "$FLEET_OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    return {t["target"]["name"]: t for t in json.load(open(path))["targets"]}
def us(ns):
    return f"{ns / 1e3:,.1f} µs"
def ms(ns):
    return f"{ns / 1e6:,.2f} ms"
def procs(t, key="cpu_per_message_ns"):
    return ", ".join(f"{p['name']}{' (apart)' if p.get('apart') else ''} {us(p['usage'][key])}" for p in t.get("processes", []))
def verdict(ok):
    return "met" if ok else "NOT met"
def shapes(prefix):
    """The results of one shape at each size, smallest first."""
    names = [f for f in os.listdir(out) if f.startswith(prefix) and f.endswith(".json")]
    return [load(f) for f in sorted(names, key=lambda f: int(f[len(prefix):-len(".json")]))]
def idle_line(idle, over=""):
    fg, mq = idle["fleetgate"]["idle"], idle["mosquitto"]["idle"]
    b = fg["bytes_per_connection"]
    print(f"idle{over}, {fg['connected']:,} connections: {b / 1024:,.1f} KiB per connection against {mq['bytes_per_connection'] / 1024:,.1f} KiB = {b / mq['bytes_per_connection']:.1f}x "
          f"(target <= 10 KB: {verdict(b <= 10000)}); idle CPU {fg['idle_cpu_percent']:.2f} % of a core against {mq['idle_cpu_percent']:.2f} % (target <= 1 %: {verdict(fg['idle_cpu_percent'] <= 1)})")
    for p in idle["fleetgate"].get("processes", []):
        print(f"  {p['name']}{' (apart)' if p.get('apart') else ''}: {p['bytes_per_connection'] / 1024:,.2f} KiB per connection, idle CPU {p['usage']['cpu_percent']:.2f} %")
def devices_line(t, over=""):
    fg, mq = t["fleetgate"]["pub"], t["mosquitto"]["pub"]
    n = fg["config"]["publishers"]
    c, cm = fg["server"]["cpu_per_message_ns"], mq["server"]["cpu_per_message_ns"]
    p99, p99m = fg["latency"]["p99_ns"], mq["latency"]["p99_ns"]
    print(f"{n:,} devices{over}: CPU per acked message {us(c)} against {us(cm)} = {c / cm:.2f}x (target <= 1.5x: {verdict(c <= 1.5 * cm)}); "
          f"PUBACK p50 {ms(fg['latency']['p50_ns'])} against {ms(mq['latency']['p50_ns'])}, p99 {ms(p99)} against {ms(p99m)} = {p99 / p99m:.2f}x (target <= 2x: {verdict(p99 <= 2 * p99m)}); "
          f"acked {fg['acked_per_sec']:,.0f}/s against {mq['acked_per_sec']:,.0f}/s, errors {fg['negative_acks'] + fg['disconnects'] + fg['connect_errors'] + fg['unacked']}")
    print(f"  per process: {procs(t['fleetgate'])}")
idle = load("idle.json")
if idle:
    idle_line(idle)
burst_idle = load("burst-idle.json")
if burst_idle:
    idle_line(burst_idle, f" after a burst of {burst_idle['fleetgate']['idle']['config'].get('burst', 0)} messages each")
tls_idle = load("tls-idle.json")
if tls_idle:
    idle_line(tls_idle, " over TLS")
for t in shapes("devices-"):
    devices_line(t)
tls_devices = load("tls-devices.json")
if tls_devices:
    devices_line(tls_devices, " over TLS")
for t in shapes("pairs-"):
    fg, mq = t["fleetgate"]["pubsub"], t["mosquitto"]["pubsub"]
    n = fg["config"]["pairs"]
    c, cm = fg["server"]["cpu_per_message_ns"], mq["server"]["cpu_per_message_ns"]
    p99 = fg["latency"]["p99_ns"]
    print(f"{n:,} pairs: e2e p50 {ms(fg['latency']['p50_ns'])} against {ms(mq['latency']['p50_ns'])}, p99 {ms(p99)} against {ms(mq['latency']['p99_ns'])} (target <= 10 ms: {verdict(p99 <= 10e6)}); "
          f"CPU per delivery {us(c)} against {us(cm)} = {c / cm:.2f}x (target <= 2x: {verdict(c <= 2 * cm)}); lost {fg['lost']}, duplicates {fg['duplicates']}")
    print(f"  per process: {procs(t['fleetgate'])}")
closed = load("closed.json")
if closed:
    fg, mq = closed["fleetgate"]["pubsub"], closed["mosquitto"]["pubsub"]
    r = fg["delivered_per_sec"] / mq["delivered_per_sec"]
    drops = open(os.path.join(out, "closed-drops")).read().strip()
    print(f"closed-loop pairs: {fg['delivered_per_sec']:,.0f} against {mq['delivered_per_sec']:,.0f} deliveries/s = {r:.2f}x (target >= 1.0x: {verdict(r >= 1)}); "
          f"acked but not delivered {fg['lost']} of {fg['expected']:,} ({100 * fg['lost'] / max(fg['expected'], 1):.3f} %), dropped at the queue bound (dispatcher) {drops}; mosquitto lost {mq['lost']} "
          f"(target: none dropped: {verdict(fg['lost'] == 0 and drops == '0')}); CPU per delivery {us(fg['server']['cpu_per_message_ns'])} against {us(mq['server']['cpu_per_message_ns'])}")
    print(f"  per process: {procs(closed['fleetgate'])}")
def storm_line(conn, over=""):
    fg, mq = conn["fleetgate"]["connect"], conn["mosquitto"]["connect"]
    r = fg["connects_per_sec"] / mq["connects_per_sec"]
    print(f"reconnect storm{over}, {fg['config']['clients']:,} persistent sessions: {fg['connects_per_sec']:,.0f} against {mq['connects_per_sec']:,.0f} connects/s = {r:.2f}x (target >= 1.0x: {verdict(r >= 1)}); "
          f"CONNACK p99 {ms(fg['connack']['p99_ns'])} against {ms(mq['connack']['p99_ns'])}; CPU per connect {us(fg['server']['cpu_per_message_ns'])} against {us(mq['server']['cpu_per_message_ns'])}")
    print(f"  per process: {procs(conn['fleetgate'])}")
conn = load("connect.json")
if conn:
    storm_line(conn)
tls_conn = load("tls-connect.json")
if tls_conn:
    storm_line(tls_conn, " over TLS (a full handshake each)")
tls_resume = load("tls-resume-connect.json")
if tls_resume:
    storm_line(tls_resume, " over TLS, each device resuming its TLS session")
    for who in ("fleetgate", "mosquitto"):
        c = tls_resume[who]["connect"]
        measured = [p for p in c.get("passes", []) if not p.get("warmup")]
        print(f"  {who}: {sum(p.get('tls_resumed', 0) for p in measured):,} of {sum(p['connected'] for p in measured):,} measured connections resumed")
sub = load("substorm.json")
if sub:
    fg, mq = sub["fleetgate"]["connect"], sub["mosquitto"]["connect"]
    r = fg["connects_per_sec"] / mq["connects_per_sec"]
    print(f"reconnect storm, {fg['config']['clients']:,} clean sessions subscribing at each CONNECT: {fg['connects_per_sec']:,.0f} against {mq['connects_per_sec']:,.0f} cycles/s = {r:.2f}x; "
          f"CONNACK p99 {ms(fg['connack']['p99_ns'])} against {ms(mq['connack']['p99_ns'])}; SUBACK p50 {ms(fg['suback']['p50_ns'])} against {ms(mq['suback']['p50_ns'])}, "
          f"p99 {ms(fg['suback']['p99_ns'])} against {ms(mq['suback']['p99_ns'])}; CPU per cycle {us(fg['server']['cpu_per_message_ns'])} against {us(mq['server']['cpu_per_message_ns'])}")
    print(f"  per process: {procs(sub['fleetgate'])}")
lb = load("haproxy.json")
if lb:
    one, two = lb["one-frontend"], lb["two-frontends"]
    c1, c2 = one["pub"]["server"]["cpu_per_message_ns"], two["pub"]["server"]["cpu_per_message_ns"]
    print(f"capacity check, {one['pub']['config']['publishers']:,} devices through HAProxy: CPU per acked message (our processes) one frontend {us(c1)}, two {us(c2)} = {c2 / c1:.2f}x; "
          f"PUBACK p99 {ms(one['pub']['latency']['p99_ns'])} / {ms(two['pub']['latency']['p99_ns'])}")
    print(f"  one frontend: {procs(one)}")
    print(f"  two frontends: {procs(two)}")
PY
else
	echo "python3 is not installed: read the ratios off the tables above"
fi
fi

log "done; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
