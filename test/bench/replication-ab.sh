#!/usr/bin/env bash
# What the dispatchers' replication gate costs (docs/benchmarks.md, "The
# replication gate"), in one run: two stacks as in production, each with its
# own Kafka-protocol broker (fleetgate-dev -dev.kafka-only, apart), a Redis
# primary and a replica (appendfsync always on both, counted), one
# dispatcher and one frontend (counted). Stack "gate" runs every default
# (dispatch.redis-replica-acks 1: commits wait for the replica); stack
# "nogate" runs -dispatch.redis-replica-acks 0. Then, with fleetgate-bench
# compare: closed-loop pairs (AB_CLOSED_PAIRS × AB_WINDOW in flight) and
# open-loop pairs (AB_PAIRS × 10 msg/s), AB_ROUNDS rounds each in flipping
# order, ratios against "nogate". AB_SAME=1 runs both stacks without the
# gate: the A/A control that says how far two equal stacks differ here.
#
# Usage: bash test/bench/replication-ab.sh   (needs redis-server, curl)
set -euo pipefail
cd "$(dirname "$0")/../.."

AB_CLOSED_PAIRS=${AB_CLOSED_PAIRS:-100}
AB_WINDOW=${AB_WINDOW:-16}
AB_PAIRS=${AB_PAIRS:-300}
AB_ROUNDS=${AB_ROUNDS:-4}
AB_DURATION=${AB_DURATION:-15s}
AB_SAME=${AB_SAME:-0}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fleetgate-replication-ab.XXXXXX")
BIN=$WORK/bin
PIDS=()
cleanup() {
	if ((${#PIDS[@]})); then
		kill "${PIDS[@]}" 2>/dev/null || true
		wait 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "building into $BIN"
go build -o "$BIN/" ./cmd/frontend ./cmd/dispatcher ./cmd/fleetgate-dev ./cmd/fleetgate-bench

port() { "$BIN/fleetgate-bench" free-port; }
wait_port() {
	local i
	for i in $(seq 200); do
		(echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "nothing listens on port $1" >&2
	exit 1
}
wait_ready() {
	local i
	for i in $(seq 300); do
		curl -sf "http://$1/readyz" >/dev/null && return 0
		sleep 0.1
	done
	echo "$2 never became ready; its log:" >&2
	cat "$3" >&2
	exit 1
}

# stack NAME DISPATCHER-FLAG...: starts one stack; writes NAME's compare
# target to $WORK/NAME.target and its dispatcher's ops address to
# $WORK/NAME.ops.
stack() {
	local n=$1 kp rp rrp fm fh dh kpid rpid rrpid dpid fpid
	shift
	kp=$(port) rp=$(port) rrp=$(port) fm=$(port) fh=$(port) dh=$(port)
	"$BIN/fleetgate-dev" -dev.kafka-only -dev.kafka-addr "127.0.0.1:$kp" -dev.data-dir "$WORK/$n-kafka" >"$WORK/$n-kafka.log" 2>&1 &
	kpid=$!
	PIDS+=("$kpid")
	mkdir -p "$WORK/$n-redis" "$WORK/$n-replica"
	redis-server --bind 127.0.0.1 --port "$rp" --dir "$WORK/$n-redis" --save "" --appendonly yes --appendfsync always \
		--logfile "$WORK/$n-redis.log" &
	rpid=$!
	PIDS+=("$rpid")
	redis-server --bind 127.0.0.1 --port "$rrp" --dir "$WORK/$n-replica" --save "" --appendonly yes --appendfsync always \
		--replicaof 127.0.0.1 "$rp" --logfile "$WORK/$n-replica.log" &
	rrpid=$!
	PIDS+=("$rrpid")
	wait_port "$kp"
	wait_port "$rp"
	wait_port "$rrp"
	"$BIN/dispatcher" -kafka.client-id "$n-dispatcher" -kafka.brokers "127.0.0.1:$kp" -redis.addrs "127.0.0.1:$rp" \
		-http.addr "127.0.0.1:$dh" -log.level warn "$@" >"$WORK/$n-dispatcher.log" 2>&1 &
	dpid=$!
	PIDS+=("$dpid")
	"$BIN/frontend" -node.id "$n-fe" -kafka.brokers "127.0.0.1:$kp" -redis.addrs "127.0.0.1:$rp" \
		-mqtt.tcp-addr "127.0.0.1:$fm" -mqtt.ws-addr "" -http.addr "127.0.0.1:$fh" -auth.allow-anonymous=true \
		-log.level warn >"$WORK/$n-fe.log" 2>&1 &
	fpid=$!
	PIDS+=("$fpid")
	wait_ready "127.0.0.1:$dh" "$n-dispatcher" "$WORK/$n-dispatcher.log"
	wait_ready "127.0.0.1:$fh" "$n-fe" "$WORK/$n-fe.log"
	wait_port "$fm"
	echo "$n=127.0.0.1:$fm,pid=$fpid+$dpid+$rpid+$rrpid,apart=$kpid" >"$WORK/$n.target"
	echo "127.0.0.1:$dh" >"$WORK/$n.ops"
	echo "$n: frontend $fpid, dispatcher $dpid ($*), redis-server $rpid, replica $rrpid (counted); kafka $kpid (apart)"
}

if [[ $AB_SAME == 1 ]]; then
	stack gate -dispatch.redis-replica-acks 0
else
	stack gate
fi
stack nogate -dispatch.redis-replica-acks 0
GATE=$(cat "$WORK/gate.target")
NOGATE=$(cat "$WORK/nogate.target")

printf '\n=== closed loop: %s pairs, %s in flight each, %s rounds of %s\n' "$AB_CLOSED_PAIRS" "$AB_WINDOW" "$AB_ROUNDS" "$AB_DURATION"
"$BIN/fleetgate-bench" compare pairs -target "$GATE" -target "$NOGATE" -baseline nogate \
	-pairs "$AB_CLOSED_PAIRS" -window "$AB_WINDOW" -size 64 -client-prefix ab-closed \
	-duration "$AB_DURATION" -warmup 3s -rounds "$AB_ROUNDS"
printf '\n=== open loop: %s pairs × 10 msg/s, %s rounds of %s\n' "$AB_PAIRS" "$AB_ROUNDS" "$AB_DURATION"
"$BIN/fleetgate-bench" compare pairs -target "$GATE" -target "$NOGATE" -baseline nogate \
	-pairs "$AB_PAIRS" -rate $((AB_PAIRS * 10)) -window 256 -size 64 -client-prefix ab-open \
	-duration "$AB_DURATION" -warmup 3s -rounds "$AB_ROUNDS"
printf '\n=== the gate'"'"'s rounds\n'
for n in gate nogate; do
	echo "$n:"
	curl -sf "http://$(cat "$WORK/$n.ops")/metrics" |
		grep -E '^fleetgate_(dispatch_replication_rounds_total|redis_replicas|dispatch_unreplicated_seconds)' || echo "  (no rounds: the gate is off)"
done
