# Goroutine stacks of a running Go process, grouped by what started each
# goroutine: how many, their stack sizes, and how deep each one's stack is in
# use while it waits. docs/connection-memory.md reads the frontend's
# per-connection stacks with it.
#
#   gdb -p "$(pgrep -f 'frontend ')" -batch -x test/bench/goroutine-stacks.py 2>/dev/null | grep -E 'goroutines|total'
#
# The process stops while gdb walks its goroutines (a second or two for
# 20,000). Needs gdb (apt-get install gdb) and a binary with DWARF (the
# default go build). Depth is stack.hi - sched.sp of a parked goroutine; the
# runtime halves a stack at GC only while depth + 800 B < a quarter of it.
import collections

import gdb

allgs = gdb.parse_and_eval("'runtime.allgs'")
arr = allgs["array"]
groups = collections.defaultdict(lambda: [0, 0, collections.Counter(), []])


def fn_name(pc):
    blk = gdb.block_for_pc(pc)
    return blk.function.name if blk and blk.function else hex(pc)


for i in range(int(allgs["len"])):
    g = arr[i].dereference()
    if int(g["atomicstatus"]["value"]) == 6:  # _Gdead
        continue
    lo, hi = int(g["stack"]["lo"]), int(g["stack"]["hi"])
    sp = int(g["sched"]["sp"])
    e = groups[fn_name(int(g["startpc"])) + "  <- " + fn_name(int(g["gopc"]))]
    e[0] += 1
    e[1] += hi - lo
    e[2][hi - lo] += 1
    if sp and lo <= sp <= hi:
        e[3].append(hi - sp)

total = 0
for key, (n, size, sizes, depths) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
    total += size
    depths.sort()
    depth = "depth min/med/max %d/%d/%d" % (depths[0], depths[len(depths) // 2], depths[-1]) if depths else ""
    hist = ", ".join("%dKiB x%d" % (s // 1024, c) for s, c in sorted(sizes.items()))
    print("%7d goroutines %11d B stacks  [%s]  %s  %s" % (n, size, hist, depth, key))
print("total stack bytes", total)
