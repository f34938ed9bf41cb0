#!/usr/bin/env bash
# Two nodes on one machine: two network namespaces joined by a veth pair (10.213.0.1 and .2), one
# `kiln-run --nnodes 2 --node-rank r` in each, 2 ranks per node, every rank all-reducing its
# [rank+1, 10*(rank+1)] through init_process_group. Each rank must print the sum over 4 ranks,
# [10, 100] (worked out below), as one node's 4 ranks do. Exit 77 (ctest's skip) where namespaces
# are not permitted (not root, or a container without CAP_SYS_ADMIN). Usage: two_nodes.sh KILN_RUN PROBE
# where PROBE is test_launcher, whose KILN_LAUNCH_PROBE=all_reduce mode is the program each rank runs.
set -uo pipefail
kiln_run=$1 probe=$2
tag=$$
ns0=kiln_n0_$tag ns1=kiln_n1_$tag
addr0=10.213.0.1 addr1=10.213.0.2
out=$(mktemp -d)

cleanup() {
  ip netns del "$ns0" 2>/dev/null
  ip netns del "$ns1" 2>/dev/null  # deleting a namespace deletes its end of the veth pair, and so the pair
  rm -rf "$out"
}
trap cleanup EXIT

if ! command -v ip >/dev/null || ! ip netns add "$ns0" 2>/dev/null; then
  echo "skipped: cannot create network namespaces here (ip netns add needs root)"
  exit 77
fi
set -e
ip netns add "$ns1"
ip link add "kv0_$tag" type veth peer name "kv1_$tag"
ip link set "kv0_$tag" netns "$ns0"
ip link set "kv1_$tag" netns "$ns1"
ip -n "$ns0" addr add "$addr0/24" dev "kv0_$tag"
ip -n "$ns1" addr add "$addr1/24" dev "kv1_$tag"
for ns in "$ns0" "$ns1"; do ip -n "$ns" link set lo up; done
ip -n "$ns0" link set "kv0_$tag" up
ip -n "$ns1" link set "kv1_$tag" up
set +e

export KILN_LAUNCH_PROBE=all_reduce
# Sum over ranks r = 0..3 of (r + 1) and of 10 * (r + 1).
want="all_reduce over 4 ranks: 10 100"

# One node, 4 ranks (inside ns0, whose ports are its own).
ip netns exec "$ns0" timeout 60 "$kiln_run" --nproc-per-node 4 --master-port 29400 "$probe" >"$out/one" 2>"$out/one.err"
one=$?
# Two nodes, 2 ranks each; node 0's launcher serves the store at addr0.
for r in 0 1; do
  ns=$ns0; [ "$r" = 1 ] && ns=$ns1
  ip netns exec "$ns" timeout 60 "$kiln_run" --nnodes 2 --node-rank "$r" --nproc-per-node 2 \
    --master-addr "$addr0" --master-port 29500 "$probe" >"$out/node$r" 2>"$out/node$r.err" &
  pids[r]=$!
done
wait "${pids[0]}"; node0=$?
wait "${pids[1]}"; node1=$?

status=0
check() {  # file, exit code, ranks expected in it
  local file=$1 code=$2; shift 2
  if [ "$code" != 0 ]; then echo "FAIL: $file exited with $code"; status=1; fi
  for rank in "$@"; do
    if ! grep -qx "\[rank $rank\] $want" "$out/$file"; then
      echo "FAIL: $file lacks '[rank $rank] $want'"; status=1
    fi
  done
  if [ "$(grep -c . "$out/$file")" != "$#" ]; then echo "FAIL: $file has other lines"; status=1; fi
}
check one "$one" 0 1 2 3
check node0 "$node0" 0 1
check node1 "$node1" 2 3
for f in one node0 node1; do
  echo "== $f"; cat "$out/$f"
  if [ "$status" != 0 ]; then cat "$out/$f.err"; fi
done
exit $status
