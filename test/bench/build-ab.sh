#!/usr/bin/env bash
# One build of fleetgate beside another, in one run (docs/benchmarks.md's
# side-by-side A/Bs): two stacks as in production, each with its own
# Kafka-protocol broker (fleetgate-dev -dev.kafka-only, apart, not counted),
# redis-server (appendfsync always, counted), one dispatcher and one
# frontend (counted). Stack "base" runs the frontend and dispatcher built at
# AB_BASE (a git revision, default HEAD), stack "new" those of the working
# tree; the load generator and the broker are the working tree's for both.
# Then, with fleetgate-bench compare, AB_ROUNDS rounds each in flipping
# order, ratios against "base", the shapes in AB_SHAPES:
#   devices  AB_DEVICES devices × 1 msg/s, open loop: CPU per acked message,
#            PUBACK p50/p99;
#   pairs    AB_PAIRS publisher → subscriber pairs × 10 msg/s: end-to-end
#            p50/p99, CPU per delivery;
#   closed   AB_CLOSED_PAIRS pairs, AB_WINDOW in flight each: deliveries/s;
#   storm    AB_STORM devices reconnecting with persistent sessions, 64 at a
#            time: connects/s, CONNACK p99, CPU per CONNECT;
#   idle     AB_IDLE connections that connect and stay silent (not in the
#            default AB_SHAPES): memory per connection after AB_IDLE_SETTLE;
#            run first, on stacks that served nothing yet, one round each
#            (a stack's RSS keeps what a round before it used); with AB_WS
#            and AB_WS_PING (say 10s) each connection sends a WebSocket
#            ping that often while silent.
# AB_TLS=1 runs the shapes over TLS (devices, storm and idle; the load
# generator's pairs are plain TCP only, so pairs and closed are left out):
# both frontends get a TLS listener (a CA and a P-256 certificate from
# fleetgate-bench tls-files), and the clients verify it and do a full
# handshake each. AB_WS=1 runs them over WebSocket instead (the frontends'
# WebSocket listener, path /mqtt); both together over WebSocket over TLS
# (wss, the same certificate).
# AB_SAME=1 runs the working tree's build in both stacks: the A/A control
# that says how far two equal stacks differ on this machine. AB_FE_ARGS are
# more flags for both frontends (say -authz.rules-file rules.yaml: the
# clients stay anonymous).
#
# Usage: AB_BASE=HEAD~1 bash test/bench/build-ab.sh   (needs git,
# redis-server, curl)
set -euo pipefail
cd "$(dirname "$0")/../.."

AB_BASE=${AB_BASE:-HEAD}
AB_SHAPES=${AB_SHAPES:-devices pairs closed storm}
AB_DEVICES=${AB_DEVICES:-10000}
AB_PAIRS=${AB_PAIRS:-300}
AB_CLOSED_PAIRS=${AB_CLOSED_PAIRS:-100}
AB_WINDOW=${AB_WINDOW:-16}
AB_STORM=${AB_STORM:-10000}
AB_ROUNDS=${AB_ROUNDS:-3}
AB_DURATION=${AB_DURATION:-15s}
AB_SAME=${AB_SAME:-0}
AB_IDLE=${AB_IDLE:-5000}
AB_IDLE_SETTLE=${AB_IDLE_SETTLE:-30s}
AB_TLS=${AB_TLS:-0}
AB_WS=${AB_WS:-0}
read -r -a AB_FE_ARGS_A <<<"${AB_FE_ARGS:-}"
# shellcheck source=test/bench/lib.sh
source test/bench/lib.sh
ab_workdir build-ab
ab_cleanup_extra() { git worktree remove --force "$WORK/base-src" 2>/dev/null || true; }

echo "building the working tree into $BIN/new"
go build -o "$BIN/new/" ./cmd/frontend ./cmd/dispatcher
go build -o "$BIN/" ./cmd/fleetgate-dev ./cmd/fleetgate-bench
if [[ $AB_SAME == 1 ]]; then
	echo "AB_SAME=1: the working tree's build in both stacks"
	cp -r "$BIN/new" "$BIN/base"
else
	rev=$(git rev-parse --short "$AB_BASE")
	echo "building $AB_BASE ($rev) into $BIN/base"
	git worktree add --detach --quiet "$WORK/base-src" "$rev"
	(cd "$WORK/base-src" && go build -o "$BIN/base/" ./cmd/frontend ./cmd/dispatcher)
fi

LISTEN_ARGS=()
if [[ $AB_TLS == 1 ]]; then
	"$BIN/fleetgate-bench" tls-files -dir "$WORK/tls" >/dev/null
	echo "AB_TLS=1: the shapes over TLS (CA $WORK/tls/ca.pem)"
fi
if [[ $AB_TLS == 1 || $AB_WS == 1 ]]; then
	for s in pairs closed; do
		if shape "$s"; then
			echo "shape $s left out (the load generator's pairs are plain TCP only)"
			AB_SHAPES=${AB_SHAPES//$s/}
		fi
	done
fi

# stack NAME: starts stack NAME with the binaries in $BIN/NAME; writes its
# compare target to $WORK/NAME.target.
stack() {
	local n=$1 kp rp fm fh dh kpid rpid dpid fpid tp
	kp=$(port) rp=$(port) fm=$(port) fh=$(port) dh=$(port)
	LISTEN_ARGS=(-mqtt.ws-addr "")
	if [[ $AB_TLS == 1 && $AB_WS == 1 ]]; then
		tp=$(port)
		LISTEN_ARGS=(-mqtt.ws-addr "127.0.0.1:$tp" -mqtt.ws-tls -mqtt.tls-addr "127.0.0.1:$(port)"
			-mqtt.tls-cert-file "$WORK/tls/server.pem" -mqtt.tls-key-file "$WORK/tls/server-key.pem")
	elif [[ $AB_TLS == 1 ]]; then
		tp=$(port)
		LISTEN_ARGS=(-mqtt.ws-addr "" -mqtt.tls-addr "127.0.0.1:$tp" -mqtt.tls-cert-file "$WORK/tls/server.pem" -mqtt.tls-key-file "$WORK/tls/server-key.pem")
	elif [[ $AB_WS == 1 ]]; then
		tp=$(port)
		LISTEN_ARGS=(-mqtt.ws-addr "127.0.0.1:$tp")
	fi
	"$BIN/fleetgate-dev" -dev.kafka-only -dev.kafka-addr "127.0.0.1:$kp" -dev.data-dir "$WORK/$n-kafka" >"$WORK/$n-kafka.log" 2>&1 &
	kpid=$!
	PIDS+=("$kpid")
	mkdir -p "$WORK/$n-redis"
	redis-server --bind 127.0.0.1 --port "$rp" --dir "$WORK/$n-redis" --save "" --appendonly yes --appendfsync always \
		--logfile "$WORK/$n-redis.log" &
	rpid=$!
	PIDS+=("$rpid")
	wait_port "$kp"
	wait_port "$rp"
	"$BIN/$n/dispatcher" -kafka.client-id "$n-dispatcher" -kafka.brokers "127.0.0.1:$kp" -redis.addrs "127.0.0.1:$rp" \
		-http.addr "127.0.0.1:$dh" -log.level warn >"$WORK/$n-dispatcher.log" 2>&1 &
	dpid=$!
	PIDS+=("$dpid")
	"$BIN/$n/frontend" -node.id "$n-fe" -kafka.brokers "127.0.0.1:$kp" -redis.addrs "127.0.0.1:$rp" \
		-mqtt.tcp-addr "127.0.0.1:$fm" -http.addr "127.0.0.1:$fh" -auth.allow-anonymous=true \
		-log.level warn "${LISTEN_ARGS[@]}" ${AB_FE_ARGS_A[@]+"${AB_FE_ARGS_A[@]}"} >"$WORK/$n-fe.log" 2>&1 &
	fpid=$!
	PIDS+=("$fpid")
	wait_ready "127.0.0.1:$dh" "$n-dispatcher" "$WORK/$n-dispatcher.log"
	wait_ready "127.0.0.1:$fh" "$n-fe" "$WORK/$n-fe.log"
	wait_port "$fm"
	if [[ $AB_TLS == 1 && $AB_WS == 1 ]]; then
		wait_port "$tp"
		echo "$n=127.0.0.1:$tp,pid=$fpid+$dpid+$rpid,apart=$kpid,tls=$WORK/tls/ca.pem,ws=/mqtt" >"$WORK/$n.target"
	elif [[ $AB_TLS == 1 ]]; then
		wait_port "$tp"
		echo "$n=127.0.0.1:$tp,pid=$fpid+$dpid+$rpid,apart=$kpid,tls=$WORK/tls/ca.pem" >"$WORK/$n.target"
	elif [[ $AB_WS == 1 ]]; then
		wait_port "$tp"
		echo "$n=127.0.0.1:$tp,pid=$fpid+$dpid+$rpid,apart=$kpid,ws=/mqtt" >"$WORK/$n.target"
	else
		echo "$n=127.0.0.1:$fm,pid=$fpid+$dpid+$rpid,apart=$kpid" >"$WORK/$n.target"
	fi
	echo "$n: frontend $fpid, dispatcher $dpid, redis-server $rpid (counted); kafka $kpid (apart)"
}

stack base
stack new
BASE=$(cat "$WORK/base.target")
NEW=$(cat "$WORK/new.target")

if shape idle; then
	# First, on stacks that have served nothing yet.
	printf '\n=== %s idle connections, settle %s, one round\n' "$AB_IDLE" "$AB_IDLE_SETTLE"
	"$BIN/fleetgate-bench" compare idle -target "$BASE" -target "$NEW" -baseline base \
		-clients "$AB_IDLE" -settle "$AB_IDLE_SETTLE" -rounds 1 -client-prefix ab-idle ${AB_WS_PING:+-ws-ping "$AB_WS_PING"}
fi
if shape devices; then
	printf '\n=== %s devices × 1 msg/s, open loop, QoS 1, %s rounds of %s\n' "$AB_DEVICES" "$AB_ROUNDS" "$AB_DURATION"
	"$BIN/fleetgate-bench" compare pub -target "$BASE" -target "$NEW" -baseline base \
		-qos 1 -publishers "$AB_DEVICES" -rate "$AB_DEVICES" -window 64 -size 64 -client-prefix ab-dev \
		-duration "$AB_DURATION" -warmup 3s -rounds "$AB_ROUNDS"
fi
if shape pairs; then
	printf '\n=== %s pairs × 10 msg/s, open loop, %s rounds of %s\n' "$AB_PAIRS" "$AB_ROUNDS" "$AB_DURATION"
	"$BIN/fleetgate-bench" compare pairs -target "$BASE" -target "$NEW" -baseline base \
		-pairs "$AB_PAIRS" -rate $((AB_PAIRS * 10)) -window 256 -size 64 -client-prefix ab-pairs \
		-duration "$AB_DURATION" -warmup 3s -rounds "$AB_ROUNDS"
fi
if shape closed; then
	printf '\n=== closed loop: %s pairs, %s in flight each, %s rounds of %s\n' "$AB_CLOSED_PAIRS" "$AB_WINDOW" "$AB_ROUNDS" "$AB_DURATION"
	"$BIN/fleetgate-bench" compare pairs -target "$BASE" -target "$NEW" -baseline base \
		-pairs "$AB_CLOSED_PAIRS" -window "$AB_WINDOW" -size 64 -client-prefix ab-closed \
		-duration "$AB_DURATION" -warmup 3s -rounds "$AB_ROUNDS"
fi
if shape storm; then
	printf '\n=== reconnect storm: %s persistent sessions, 64 at a time, %s rounds\n' "$AB_STORM" "$AB_ROUNDS"
	"$BIN/fleetgate-bench" compare connect -target "$BASE" -target "$NEW" -baseline base \
		-clients "$AB_STORM" -connect-concurrency 64 -persistent -warmup-passes 1 -passes 1 \
		-rounds "$AB_ROUNDS" -client-prefix ab-storm
fi
printf '\n=== warnings and errors the stacks logged\n'
grep -h -E 'level=(WARN|ERROR)' "$WORK"/*-fe.log "$WORK"/*-dispatcher.log | head -20 || true
