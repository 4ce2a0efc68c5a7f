#!/usr/bin/env bash
# `vidsparse bench` at full size for every model family of issue 22, in ONE GPU call of at most 570 s on one H200:
# stock diffusers, vidsparse dense and the hybrid (its refresh and choosing steps untimed, one reusing step timed),
# with the stock step's attention share. Run from the repository root on the GPU machine, with the wheels of
# diffusers, omegaconf and antlr4 in .whl/ (the device has torch, triton and accelerate but not those):
#
#   bash pipelines/bench_families.sh                      # every family, cheapest first, within LIMIT_S (560 s)
#   bash pipelines/bench_families.sh ltx-video mochi-1    # some of them
#   bash pipelines/bench_families.sh --dry-run ltx-video  # tiny CPU models, no wheels: tests this script
#
# Each family runs in its own process (`timeout` per family: a family that runs long or runs out of memory costs
# only itself), after a guard that skips it when less than MIN_S would be left. Per-family results land under
# $WORK (bench/<family>/bench.json and .md, bench/<family>.log); six files land in $OUT, because the device tool
# brings back at most eight: status.tsv (family, exit status, seconds), BENCH_FAMILIES.md / .json merged by
# pipelines/bench_families.py (the markdown is what goes in pipelines/BENCH_FAMILIES.md, its summary table in
# pipelines/bench.md), bench_md_section.md, log.txt, and results.tar.gz with everything under $WORK.
#
# Sizes: each family's YAML config, except Wan2.2-Animate at --quick (480 x 832 instead of its 720p: the 720p step,
# about 13 s, does not fit the call beside the others; the 720p shape is Wan2.1-14B's, in BENCH_STEP.md).
set -u -o pipefail
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${OUT:-/tmp/vidsparse-families}
WORK=${WORK:-$(mktemp -d)}
LIMIT_S=${LIMIT_S:-560}   # the whole script, from its start, pip install included
RESERVE_S=15              # kept for the merge and the archive
MIN_S=25                  # a family is skipped when less than this is left
START=$(date +%s)
mkdir -p "$OUT" "$WORK/bench"
if [ "$DRY" = 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
exec > >(tee "$OUT/log.txt") 2>&1
[ "$DRY" = 0 ] && nvidia-smi -L
python3 -c "import torch, triton, diffusers; print(torch.__version__, triton.__version__, diffusers.__version__)"

# family:cap_s:extra flags, cheapest first (caps from about 8.5 forwards plus build and compile at each size)
PLAN=(
    "ltx-video:45:--steps-timed 3"
    "ltx-2:60:--steps-timed 3"
    "wan2.1-i2v-14b:75:"
    "wan2.2-animate-14b:75:--quick"
    "wan2.1-vace-14b:80:"
    "cosmos-1.0-7b:80:"
    "mochi-1:85:"
    "hunyuanvideo-1.5:100:"
    "skyreels-v2-df-14b:100:"
)
WANTED=" $* "
HYBRID="hybrid:refresh_steps=0,untimed=2"
printf "family\tstatus\tseconds\n" > "$WORK/status.tsv"
for entry in "${PLAN[@]}"; do
    IFS=: read -r name cap flags <<< "$entry"
    if [ $# -gt 0 ] && [[ "$WANTED" != *" $name "* ]]; then continue; fi
    left=$(( LIMIT_S - RESERVE_S - ($(date +%s) - START) ))
    if [ "$left" -lt "$MIN_S" ]; then
        echo "== $name: skipped, ${left} s left of ${LIMIT_S}"
        printf "%s\tskipped\t0\n" "$name" >> "$WORK/status.tsv"
        continue
    fi
    limit=$(( cap < left ? cap : left ))
    run_flags="--steps-timed 1 $flags"
    if [ "$DRY" = 1 ]; then run_flags="--dry-run"; fi
    echo "== $name: up to ${limit} s ($run_flags)"
    t0=$(date +%s)
    # shellcheck disable=SC2086  # the flags are words
    timeout -k 5 "$limit" python3 -m vidsparse.app.cli bench --models "$name" --methods "$HYBRID" --skip-fast-sdpa \
        $run_flags --budget-s $(( limit - 10 )) --out "$WORK/bench/$name" > "$WORK/bench/$name.log" 2>&1 &
    pid=$!
    wait $pid  # by pid: a bare `wait` also waits for the log's tee, which never ends
    rc=$?
    status=$rc
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="timeout after ${limit} s"; fi
    printf "%s\t%s\t%s\n" "$name" "$status" "$(( $(date +%s) - t0 ))" >> "$WORK/status.tsv"
    grep -E "^\| $name " "$WORK/bench/$name.log" || tail -n 5 "$WORK/bench/$name.log"
done
python3 pipelines/bench_families.py "$WORK" --limit-s "$LIMIT_S"
tar -czf "$OUT/results.tar.gz" -C "$WORK" bench status.tsv BENCH_FAMILIES.md BENCH_FAMILIES.json bench_md_section.md
cp "$WORK/status.tsv" "$WORK/BENCH_FAMILIES.md" "$WORK/BENCH_FAMILIES.json" "$WORK/bench_md_section.md" "$OUT/"
echo "done in $(( $(date +%s) - START )) s"
