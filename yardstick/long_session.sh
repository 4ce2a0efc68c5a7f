#!/usr/bin/env bash
# The long yardstick's whole GPU session in one call: train, assemble, search, card. Run from the repository root.
#
#   bash yardstick/long_session.sh             on one H200, inside one device call (about 9.4 minutes in all)
#   bash yardstick/long_session.sh --dry-run   the same flow on the CPU at 4 frames of 32 x 32, in about a minute
#
# Stages, each under `timeout` and all under one deadline (DEADLINE seconds from the start, default 555: with the
# call's wheel install before it, about 9.4 minutes), so the script always leaves what it has in $OUT (default:
# ./out/long, or a temporary folder with --dry-run):
# 1. the carried wheels (.whl/) into /tmp/site, unless the call installed them already;
# 2. training: `python -m vidsparse.yardstick.train --frames 16 --height 128 --width 128` from the shipped
#    transformer, for MINUTES of training (default: what the deadline leaves, about 7.1; the step count is fitted to
#    it after timing 30 steps); the EMA weights are saved every 2 minutes, so a stage stopped early leaves weights;
# 3. assembly: the transformer alone (float16) into vidsparse/yardstick/weights-long/ of this tree, where the
#    built-in `yardstick-long` loads it;
# 4. at the same time: `vidsparse search --model yardstick-long` (its config's calibration prompts) writes
#    vidsparse/search/patterns/yardstick-long.safetensors, `yardstick/make_card.py --long` generates the samples
#    picture (each sample above the rendered truth of its prompt) and the card's numbers, and
#    `yardstick/prompt_words.py --model yardstick-long` measures which prompt words the new weights read.
#
# $OUT, 9 files, mirroring where each goes in the repository (`python yardstick/fill_long_card.py --from $OUT` puts
# them there, draws the loss curve and fills the card's TODO(gpu) numbers):
#   weights-long/transformer/{config.json,diffusion_pytorch_model.safetensors} -> vidsparse/yardstick/weights-long/transformer/
#   patterns/yardstick-long.safetensors                                          -> vidsparse/search/patterns/
#   yardstick/long_samples.png, long_card.json, prompt_words_long.json           -> yardstick/
#   training/long_train.log, long_loss.json, long_train.json                     -> yardstick/training/
set -u -o pipefail
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
START=$(date +%s)
DEADLINE=${DEADLINE:-555}
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
stage() { echo "== $(( $(date +%s) - START )) s: $*"; }
export PYTHONUNBUFFERED=1

if [ $DRY = 1 ]; then
    # A copy of this tree, so that the tiny weights and pattern file of the dry run never land in the repository.
    OUT=${OUT:-$(mktemp -d)/out}
    ROOT=$(mktemp -d)/repo
    mkdir -p "$ROOT"
    git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$ROOT"
    cd "$ROOT" || exit 1
    export PYTHONPATH=$PWD OMP_NUM_THREADS=1  # one thread each: the search, the card and the prompt words run side by side
    SIZE="--frames 4 --height 32 --width 32"
    TRAIN="--steps 26 --batch 1 --workers 0"
    SEARCH="--frames 4 --height 32 --width 32 --steps 2 --device cpu --prompt 'a white circle bouncing over a navy striped background' search.observe=1 search.rows_per_frame=8"
    CARD="--device cpu --frames 4 --height 32 --width 32 --steps 2 --samples 2"
    WORDS="--device cpu --size 4 32 32 --seeds 1"
else
    OUT=${OUT:-$PWD/out/long}
    if [ ! -d /tmp/site/diffusers ] && ls .whl/*.whl >/dev/null 2>&1; then  # not installed by the call already
        stage "installing the carried wheels"
        timeout 90 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || echo "wheel install failed"
    fi
    if [ -d /tmp/site/diffusers ]; then export PYTHONPATH=/tmp/site:$PWD; else export PYTHONPATH=$PWD; fi
    SIZE="--frames 16 --height 128 --width 128"
    # Batch 8 x 16,416 tokens is about stage 2's tokens per step (48 x 2,336); lr a little below its 4e-4 (a fine-tune).
    # The training loop's minutes: what the deadline leaves after 85 s for the last stages and 40 s for the
    # training's own start (imports, model, workers) and final save; about 7.1 on a warm machine.
    MINUTES=${MINUTES:-$(awk -v s=$(( $(left) - 85 - 40 )) 'BEGIN { printf "%.2f", s / 60 }')}
    TRAIN="--minutes $MINUTES --batch ${BATCH:-8} --lr ${LR:-3e-4} --workers ${WORKERS:-6} --save-every-min 2"
    # SNR_SHIFT (default 1, the shipped weights'): train and sample with every noise level's SNR divided by it (the
    # scheduler's snr_shift_scale), since 16,384 tokens carry more redundant signal at one level. 4, fine-tuned for
    # 5.75 minutes from the long weights, did not make the samples draw their scenes (yardstick/training/long_shift4_*).
    SEARCH="--device cuda"
    CARD="--device cuda"
    WORDS="--device cuda"
fi
mkdir -p "$OUT/weights-long/transformer" "$OUT/patterns" "$OUT/yardstick" "$OUT/training"
LOG=$OUT/training/long_train.log
WORK=$(mktemp -d)
echo "session: $(date -u +%FT%TZ), dry run $DRY, deadline ${DEADLINE} s, tree $PWD, out $OUT" | tee "$LOG"

# SHAPE_WEIGHT (default 0, the shipped weights'): weight the loss by 1 + this where the shapes are (train.py
# --shape-weight), since the small model reads the shape and direction words weakly (prompt_words.py).
TRAIN="$TRAIN --shape-weight ${SHAPE_WEIGHT:-0}"
stage "training ($SIZE $TRAIN)" | tee -a "$LOG"
TRAIN_LIMIT=$(( $(left) - 85 ))  # leaves assembly, search and card about 85 s
[ $DRY = 1 ] && TRAIN_LIMIT=300
[ $TRAIN_LIMIT -lt 30 ] && TRAIN_LIMIT=30  # `timeout 0` would mean no limit
# INIT: the weights to fine-tune (default the shipped small yardstick's; a second session passes the long one's).
INIT=${INIT:-vidsparse/yardstick/weights/transformer/diffusion_pytorch_model.safetensors}
SHIFT="--snr-shift-scale ${SNR_SHIFT:-1}"
cp "$INIT" "$WORK/init.safetensors"  # the assembly below replaces weights-long, which INIT may point into
eval timeout -k 10 $TRAIN_LIMIT python3 -m vidsparse.yardstick.train --out "$WORK/run" $SIZE $TRAIN $SHIFT \
    --init "$WORK/init.safetensors" 2>&1 | tee -a "$LOG"
echo "training exit $?" | tee -a "$LOG"
[ -f "$WORK/run/loss.json" ] && cp "$WORK/run/loss.json" "$OUT/training/long_loss.json"
[ -f "$WORK/run/train.json" ] && cp "$WORK/run/train.json" "$OUT/training/long_train.json"
TRAINED=$WORK/run/weights/transformer/diffusion_pytorch_model.safetensors
if [ ! -f "$TRAINED" ]; then
    echo "no trained weights: stopping" | tee -a "$LOG"
    exit 1
fi

stage "assembling vidsparse/yardstick/weights-long" | tee -a "$LOG"
rm -rf vidsparse/yardstick/weights-long
timeout 120 python3 -m vidsparse.yardstick.train --assemble "$TRAINED" $SIZE $SHIFT --transformer-only \
    --out vidsparse/yardstick/weights-long 2>&1 | tee -a "$LOG"
cp vidsparse/yardstick/weights-long/transformer/config.json \
   vidsparse/yardstick/weights-long/transformer/diffusion_pytorch_model.safetensors "$OUT/weights-long/transformer/"
if [ -d vidsparse/yardstick/weights-long/scheduler ]; then  # a shifted schedule: the sampler's noise levels too
    mkdir -p "$OUT/weights-long/scheduler"
    cp vidsparse/yardstick/weights-long/scheduler/* "$OUT/weights-long/scheduler/"
fi
ls -l "$OUT/weights-long/transformer" | tee -a "$LOG"

LIMIT=$(( $(left) - 8 ))
[ $DRY = 1 ] && LIMIT=300
[ $LIMIT -lt 10 ] && LIMIT=10
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # three processes side by side: keep their CPU threads from spinning
stage "search, card and prompt words, in parallel, each within $LIMIT s" | tee -a "$LOG"
PATTERNS=vidsparse/search/patterns/yardstick-long.safetensors
rm -f "$PATTERNS" "$PATTERNS.ckpt.pt"
mkdir -p "$WORK/card"
eval timeout -k 5 $LIMIT python3 -m vidsparse search --model yardstick-long --out "$PATTERNS" $SEARCH \
    >"$WORK/search.log" 2>&1 &
SEARCH_PID=$!
eval timeout -k 5 $LIMIT python3 yardstick/prompt_words.py --model yardstick-long $WORDS \
    --out "$WORK/card/prompt_words_long.json" >"$WORK/words.log" 2>&1 &
WORDS_PID=$!
cp "$OUT/training/long_loss.json" "$OUT/training/long_train.json" "$WORK/card/" 2>/dev/null
timeout -k 5 $LIMIT python3 yardstick/make_card.py --long $CARD --weights vidsparse/yardstick/weights-long \
    --run "$WORK/card" --out "$WORK/card" >"$WORK/card.log" 2>&1
echo "card exit $?" >>"$WORK/card.log"
wait $SEARCH_PID
echo "search exit $?" >>"$WORK/search.log"
wait $WORDS_PID
echo "prompt words exit $?" >>"$WORK/words.log"
{ echo "== search"; cat "$WORK/search.log"; echo "== card"; cat "$WORK/card.log"; echo "== prompt words";
  cat "$WORK/words.log"; } | tee -a "$LOG"
[ -f "$PATTERNS" ] && cp "$PATTERNS" "$OUT/patterns/"
for f in long_samples.png long_card.json prompt_words_long.json; do [ -f "$WORK/card/$f" ] && cp "$WORK/card/$f" "$OUT/yardstick/"; done
stage "done" | tee -a "$LOG"
(cd "$OUT" && find . -type f -printf '%8s  %p\n' | sort -k2) | tee -a "$LOG"
