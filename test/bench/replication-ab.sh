#!/usr/bin/env bash
# What waiting for the Redis replicas costs (docs/benchmarks.md, "The
# replication gate"), in one run: two stacks as in production, each with its
# own Kafka-protocol broker (fleetgate-dev -dev.kafka-only, apart), a Redis
# primary and a replica (appendfsync always on both, counted), one
# dispatcher and one frontend (counted). Stack "gate" runs every default
# (dispatch.redis-replica-acks 1: commits wait for the replica;
# subscriptions.redis-replica-acks 1: SUBACKs wait for it); stack "nogate"
# runs both at 0. Then, with fleetgate-bench compare, AB_ROUNDS rounds each
# in flipping order, ratios against "nogate", the shapes in AB_SHAPES:
# closed (closed-loop pairs, AB_CLOSED_PAIRS × AB_WINDOW in flight), open
# (open-loop pairs, AB_PAIRS × 10 msg/s), substorm (AB_SUBSTORM clean
# sessions reconnecting 64 at a time, each subscribing after its CONNACK)
# and newstorm (AB_NEWSTORM devices, each an ES256 JWT identity, opening
# new persistent sessions 64 at a time: the CONNACK that gives a session its
# owner waits for the replica; one round per target with fresh client ids,
# AB_ROUNDS times). The frontends accept such tokens beside anonymous
# clients (auth.jwt.key-files with auth.allow-anonymous); only newstorm
# sends them.
# At the end it prints the Redis servers' background work (append-only file
# rewrites) and their events slower than 5 ms (LATENCY LATEST).
# AB_SAME=1 runs both stacks without the waits: the A/A control that says
# how far two equal stacks differ here.
#
# Usage: bash test/bench/replication-ab.sh   (needs redis-server, redis-cli, curl)
set -euo pipefail
cd "$(dirname "$0")/../.."

AB_CLOSED_PAIRS=${AB_CLOSED_PAIRS:-100}
AB_WINDOW=${AB_WINDOW:-16}
AB_PAIRS=${AB_PAIRS:-300}
AB_ROUNDS=${AB_ROUNDS:-4}
AB_DURATION=${AB_DURATION:-15s}
AB_SAME=${AB_SAME:-0}
AB_SHAPES=${AB_SHAPES:-closed open substorm newstorm}
AB_SUBSTORM=${AB_SUBSTORM:-5000}
AB_NEWSTORM=${AB_NEWSTORM:-5000}
# shellcheck source=test/bench/lib.sh
source test/bench/lib.sh
ab_workdir replication-ab

echo "building into $BIN"
go build -o "$BIN/" ./cmd/frontend ./cmd/dispatcher ./cmd/fleetgate-dev ./cmd/fleetgate-bench

# The devices' identities for newstorm: an ES256 key and a token each.
ACC=$WORK/access
"$BIN/fleetgate-bench" access-files -dir "$ACC" -identities "$AB_NEWSTORM" -tokens "$AB_NEWSTORM" -passwords 0 \
	-password-hashes 1 -password-cost 4 -rules 1 -groups 1 -quiet >/dev/null

# stack NAME ACKS: starts one stack whose dispatcher and frontend wait for
# ACKS replicas ("" for the default); writes NAME's compare target to
# $WORK/NAME.target and its processes' ops addresses to $WORK/NAME.ops.
stack() {
	local n=$1 kp rp rrp fm fh dh kpid rpid rrpid dpid fpid
	local dflags=() fflags=()
	if [[ -n $2 ]]; then
		dflags=(-dispatch.redis-replica-acks "$2")
		fflags=(-subscriptions.redis-replica-acks "$2")
	fi
	kp=$(port) rp=$(port) rrp=$(port) fm=$(port) fh=$(port) dh=$(port)
	"$BIN/fleetgate-dev" -dev.kafka-only -dev.kafka-addr "127.0.0.1:$kp" -dev.data-dir "$WORK/$n-kafka" >"$WORK/$n-kafka.log" 2>&1 &
	kpid=$!
	PIDS+=("$kpid")
	mkdir -p "$WORK/$n-redis" "$WORK/$n-replica"
	redis-server --bind 127.0.0.1 --port "$rp" --dir "$WORK/$n-redis" --save "" --appendonly yes --appendfsync always \
		--latency-monitor-threshold 5 --logfile "$WORK/$n-redis.log" &
	rpid=$!
	PIDS+=("$rpid")
	redis-server --bind 127.0.0.1 --port "$rrp" --dir "$WORK/$n-replica" --save "" --appendonly yes --appendfsync always \
		--latency-monitor-threshold 5 --replicaof 127.0.0.1 "$rp" --logfile "$WORK/$n-replica.log" &
	rrpid=$!
	PIDS+=("$rrpid")
	wait_port "$kp"
	wait_port "$rp"
	wait_port "$rrp"
	"$BIN/dispatcher" -kafka.client-id "$n-dispatcher" -kafka.brokers "127.0.0.1:$kp" -redis.addrs "127.0.0.1:$rp" \
		-http.addr "127.0.0.1:$dh" -log.level warn ${dflags[@]+"${dflags[@]}"} >"$WORK/$n-dispatcher.log" 2>&1 &
	dpid=$!
	PIDS+=("$dpid")
	"$BIN/frontend" -node.id "$n-fe" -kafka.brokers "127.0.0.1:$kp" -redis.addrs "127.0.0.1:$rp" \
		-mqtt.tcp-addr "127.0.0.1:$fm" -mqtt.ws-addr "" -http.addr "127.0.0.1:$fh" -auth.allow-anonymous=true \
		-auth.jwt.key-files "$ACC/jwt-public.pem" \
		-log.level warn ${fflags[@]+"${fflags[@]}"} >"$WORK/$n-fe.log" 2>&1 &
	fpid=$!
	PIDS+=("$fpid")
	wait_ready "127.0.0.1:$dh" "$n-dispatcher" "$WORK/$n-dispatcher.log"
	wait_ready "127.0.0.1:$fh" "$n-fe" "$WORK/$n-fe.log"
	wait_port "$fm"
	# The replica's first synchronisation (Redis waits
	# repl-diskless-sync-delay, 5 s, before it starts) is not measured.
	local i
	for i in $(seq 300); do
		redis-cli -p "$rrp" info replication | grep -q '^master_link_status:up' && break
		sleep 0.1
	done
	echo "$n=127.0.0.1:$fm,pid=$fpid+$dpid+$rpid+$rrpid,apart=$kpid" >"$WORK/$n.target"
	echo "127.0.0.1:$dh 127.0.0.1:$fh" >"$WORK/$n.ops"
	echo "$rp $rrp" >"$WORK/$n.redis"
	echo "$n: frontend $fpid, dispatcher $dpid (replica acks: ${2:-default}), redis-server $rpid, replica $rrpid (counted); kafka $kpid (apart)"
}

if [[ $AB_SAME == 1 ]]; then
	stack gate 0
else
	stack gate ""
fi
stack nogate 0
GATE=$(cat "$WORK/gate.target")
NOGATE=$(cat "$WORK/nogate.target")

if shape closed; then
	printf '\n=== closed loop: %s pairs, %s in flight each, %s rounds of %s\n' "$AB_CLOSED_PAIRS" "$AB_WINDOW" "$AB_ROUNDS" "$AB_DURATION"
	"$BIN/fleetgate-bench" compare pairs -target "$GATE" -target "$NOGATE" -baseline nogate \
		-pairs "$AB_CLOSED_PAIRS" -window "$AB_WINDOW" -size 64 -client-prefix ab-closed \
		-duration "$AB_DURATION" -warmup 3s -rounds "$AB_ROUNDS"
fi
if shape open; then
	printf '\n=== open loop: %s pairs × 10 msg/s, %s rounds of %s\n' "$AB_PAIRS" "$AB_ROUNDS" "$AB_DURATION"
	"$BIN/fleetgate-bench" compare pairs -target "$GATE" -target "$NOGATE" -baseline nogate \
		-pairs "$AB_PAIRS" -rate $((AB_PAIRS * 10)) -window 256 -size 64 -client-prefix ab-open \
		-duration "$AB_DURATION" -warmup 3s -rounds "$AB_ROUNDS"
fi
if shape substorm; then
	printf '\n=== clean sessions subscribing at each CONNECT: %s devices, 64 at a time, %s rounds\n' "$AB_SUBSTORM" "$AB_ROUNDS"
	"$BIN/fleetgate-bench" compare connect -target "$GATE" -target "$NOGATE" -baseline nogate \
		-clients "$AB_SUBSTORM" -connect-concurrency 64 -subscribe 'devices/%c/cmd/#' -warmup-passes 1 -passes 1 \
		-rounds "$AB_ROUNDS" -client-prefix ab-substorm
fi
if shape newstorm; then
	printf '\n=== new persistent sessions of JWT identities: %s devices, 64 at a time, %s rounds with fresh client ids\n' "$AB_NEWSTORM" "$AB_ROUNDS"
	for r in $(seq "$AB_ROUNDS"); do
		targets=(-target "$GATE,creds=$ACC/jwt.creds" -target "$NOGATE,creds=$ACC/jwt.creds")
		if ((r % 2 == 0)); then # the other one first
			targets=(-target "$NOGATE,creds=$ACC/jwt.creds" -target "$GATE,creds=$ACC/jwt.creds")
		fi
		"$BIN/fleetgate-bench" compare connect "${targets[@]}" -baseline nogate \
			-clients "$AB_NEWSTORM" -connect-concurrency 64 -persistent -warmup-passes 0 -passes 1 \
			-rounds 1 -client-prefix "ab-new-$r-"
	done
fi
printf '\n=== warnings and errors the stacks logged\n'
grep -h -E 'level=(WARN|ERROR)' "$WORK"/*-fe.log "$WORK"/*-dispatcher.log | head -20 || true
printf '\n=== what the Redis servers did in the background (append-only file rewrites, synchronisations)\n'
for f in "$WORK"/*-redis.log "$WORK"/*-replica.log; do
	grep -H -E 'rewriting started|rewrite terminated|Synchronization with replica|MASTER <-> REPLICA sync: Finished' "$f" |
		sed "s|$WORK/||" || true
done
printf '\n=== Redis events slower than 5 ms (LATENCY LATEST: event, when, latest ms, max ms), primary then replica\n'
for n in gate nogate; do
	for p in $(cat "$WORK/$n.redis"); do
		echo "$n :$p: $(redis-cli -p "$p" latency latest | paste -sd' ')"
	done
done
if [[ -n ${AB_LATENCY_HISTORY:-} ]]; then
	# Each second's slowest fsync of the primaries' append-only file (unix
	# time, ms), to set beside the rounds' times.
	for n in gate nogate; do
		p=$(cut -d' ' -f1 "$WORK/$n.redis")
		echo "$n :$p aof-fsync-always: $(redis-cli -p "$p" latency history aof-fsync-always | paste -sd' ' | sed 's/\([0-9]\{10\}\) /\n  \1 /g')"
	done
fi
printf '\n=== the waits for the replica\n'
for n in gate nogate; do
	echo "$n:"
	for ops in $(cat "$WORK/$n.ops"); do
		curl -sf "http://$ops/metrics" |
			grep -E '^fleetgate_(dispatch_replication_rounds_total|redis_replicas|dispatch_unreplicated_seconds|subscribe_replica_waits_total|delivery_claim_replica_waits_total)' || true
	done
done
