#!/bin/sh
# Regenerates every chart in this folder, and the data under data/ it is drawn from, with a
# release build: one run per point (the charts illustrate; BENCHMARKS.md holds the medians).
# Takes under a minute after the build. Run from anywhere: benches/plots/make.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
cargo build --release -p benches --bins
bin=${CARGO_TARGET_DIR:-$root/target}/release
data=$here/data
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
rm -rf "$data"
mkdir -p "$data"
results=$data/results.csv

# Bandwidth: every member sends; messages per sender chosen so a run takes 1-3 s here (shm
# moves about twice as much as tcp, so it sends twice as many).
for transport in tcp shm; do
    scale=1
    [ "$transport" = shm ] && scale=2
    for nodes in 2 3; do
        # payload, window, messages per sender (tcp)
        for point in "1024 64 100000" "10240 64 40000" "102400 16 5000" "1048576 16 800"; do
            # shellcheck disable=SC2086
            set -- $point
            "$bin/launch" --nodes "$nodes" --transport "$transport" --payload "$1" --window "$2" \
                --csv "$results" -- bandwidth_test "$nodes" 0 $(($3 * scale)) 0
        done
    done
done
"$bin/plot" bandwidth "$results" "$here/bandwidth.svg"

# Latency: 2 members, 100 B, both sending; node 0 writes its sorted latencies.
for transport in tcp shm; do
    "$bin/launch" --nodes 2 --transport "$transport" --payload 100 --csv "$results" \
        --samples "$scratch" -- latency_test 2 0 3000 0
    cp "$scratch/latency-$transport-n2-p100.csv" "$data/"
done
"$bin/plot" cdf "$data/latency-tcp-n2-p100.csv" "$data/latency-shm-n2-p100.csv" \
    "$here/latency-cdf.svg"

# The view-change dip: 4 members stream, member 2 is killed (kill -9) 2 s in. The raw delivery
# times are about a megabyte per member; the committed files count them per 10 ms, which draws
# the same chart.
"$bin/launch" --nodes 4 --kill 2@2000 --csv "$results" --samples "$scratch" -- stream_test 4 5000
for raw in "$scratch"/deliveries-n*.csv; do
    "$bin/plot" buckets "$raw" "$data/$(basename "$raw")"
done
"$bin/plot" dip "$data"/deliveries-n*.csv "$here/view-change-dip.svg"

ls -l "$here" "$data"
