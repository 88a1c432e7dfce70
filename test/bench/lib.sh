# Helpers shared by the A/B scripts of test/bench (sourced; needs curl, and
# $BIN with fleetgate-bench once built).

# shape NAME reports whether AB_SHAPES lists NAME.
shape() { [[ " $AB_SHAPES " == *" $1 "* ]]; }

# ab_workdir NAME makes the run's temporary directory WORK (binaries in
# BIN) and stops every process in PIDS and removes WORK at exit, after
# calling ab_cleanup_extra when the script defines it.
ab_workdir() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/fleetgate-$1.XXXXXX")
	BIN=$WORK/bin
	PIDS=()
	trap ab_cleanup EXIT
}
ab_cleanup() {
	if ((${#PIDS[@]})); then
		kill "${PIDS[@]}" 2>/dev/null || true
		wait 2>/dev/null || true
	fi
	if declare -F ab_cleanup_extra >/dev/null; then
		ab_cleanup_extra
	fi
	rm -rf "$WORK"
}

# port prints a free TCP port on 127.0.0.1.
port() { "$BIN/fleetgate-bench" free-port; }

# wait_port PORT waits until something listens on 127.0.0.1:PORT.
wait_port() {
	local i
	for i in $(seq 200); do
		(echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "nothing listens on port $1" >&2
	exit 1
}

# wait_ready ADDR NAME LOG waits until the process NAME's /readyz at ADDR
# answers, and prints LOG and exits when it never does.
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
