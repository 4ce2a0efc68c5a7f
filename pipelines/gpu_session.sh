#!/usr/bin/env bash
# Every GPU measurement of the plan-seam, profile, delta and hybrid work, in parts of under 10 minutes each on one H200.
# Run from the repository root on the GPU machine, with the wheels of diffusers, omegaconf and antlr4 in .whl/
# (the device has torch, triton and accelerate but not those):
#
#   bash pipelines/gpu_session.sh 1   # GPU tests, column-sparse kernel bench, yardstick quality sweep
#   bash pipelines/gpu_session.sh 2   # CogVideoX-5b 480p and HunyuanVideo 720p x 129 frames: stock, dense, profile,
#                                     # delta, memory (profile's forced mix from part 1's yardstick/sweep.json)
#   bash pipelines/gpu_session.sh 3   # after changes: the column kernel without Flex, profiling overheads, the delta
#                                     # cache offloaded at 720p, the yardstick sweep and the GPU tests again
#   bash pipelines/gpu_session.sh 4   # profile's full-size steps again, with the cheaper profiling of part 3
#   bash pipelines/gpu_session.sh 5   # hybrid: GPU tests, the yardstick sweep of every method (hybrid, hybrid with
#                                     # FirstBlockCache), CogVideoX-5b steps (stock, dense, delta, hybrid)
#   bash pipelines/gpu_session.sh 7   # after part 5's fixes: GPU tests, CogVideoX-5b steps again, a reusing hybrid
#                                     # step's profile
#   bash pipelines/gpu_session.sh 6   # hybrid: HunyuanVideo 720p x 129 steps (stock, dense, delta, hybrid), the
#                                     # hybrid's choices forced to the mix of part 5's yardstick/sweep.json
#   bash pipelines/gpu_session.sh 8   # dynamic (issue 20): both yardsticks' pattern files searched again with the
#                                     # dynamic calibration, the sweep of both yardsticks, kernels/bench_dynamic.py,
#                                     # the dynamic and narrow-column GPU tests
#   bash pipelines/gpu_session.sh 10  # issue 23: the GPU tests (every failure's message kept) and the cost of the
#                                     # delta refresh's subtractable float32 outputs (kernels/bench_subtractable.py)
#   bash pipelines/gpu_session.sh 11  # issue 19: the long yardstick's samples under each sampling setting
#                                     # (yardstick/long_settings.py: guidance, its schedule, steps, SNR shift)
#   bash pipelines/gpu_session.sh 12  # issue 19, after part 11: the long pattern file searched again, the long
#                                     # card (samples, numbers) and the sweep of both yardsticks
#   bash pipelines/gpu_session.sh 13  # issue 21, the refresh that leaves the columns out: the GPU tests, its parts
#                                     # (kernels/bench_refresh.py), HunyuanVideo 720p stock, delta and offloaded
#                                     # delta steps
#   bash pipelines/gpu_session.sh 14  # issue 21, after the rest pass got its own tiles and the selection its kernel:
#                                     # the GPU tests, the refresh's parts on both tiles and both selections,
#                                     # HunyuanVideo 720p stock, dense and delta steps
#   bash pipelines/gpu_session.sh 15  # issue 21: HunyuanVideo 720p's hybrid loop in order, its mix forced, at the
#                                     # preset's 8 GiB of GPU cache (pipelines/bench_loop.py)
#   bash pipelines/gpu_session.sh 16  # the sweep of both yardsticks again (the GPU refresh leaves the columns out)
#   bash pipelines/gpu_session.sh 17  # issue 21: the column kernel on packed lists beside int32 ones (kernels/bench.py
#                                     # --only columns), and the GPU tests of the packed lists and the selection
#   TOP_P=0.8 DENSITY=0.51 bash pipelines/gpu_session.sh 9   # HunyuanVideo 720p x 129: stock, dense, a dynamic step capped
#                                     # at DENSITY (the long yardstick's), then pipelines/bench_loop.py if present
#
# Results land in $OUT/results.tar.gz (the files as they go in the repository) and $OUT/log.txt.
set -u -o pipefail
OUT=${OUT:-/tmp/vidsparse-gpu}
mkdir -p "$OUT"
STAGE=$OUT/stage  # under $OUT: what a stage wrote comes back even when the call is stopped at its limit
mkdir -p "$STAGE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi -L
python3 -c "import torch, triton, diffusers; print(torch.__version__, triton.__version__, diffusers.__version__)"
# the stamp the GPU test record starts with: date, GPU, versions and the command
STAMP="# python3 -m pytest -q -m gpu tests -p no:cacheprovider  ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(python3 -c 'import torch, triton, diffusers; print(f"torch {torch.__version__}, triton {triton.__version__}, diffusers {diffusers.__version__}")'))"

if [ "${1:-1}" = "1" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/kernels" "$STAGE/yardstick"
    { echo "$STAMP"; timeout 120 python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1; } | tee "$STAGE/tests/GPU_RESULTS.txt"
    timeout 200 python3 kernels/bench.py --only columns --out "$STAGE/kernels" 2>&1 | tail -60
    timeout 240 python3 yardstick/sweep.py --device cuda --prompts 3 --out "$STAGE/yardstick" 2>&1 | tail -40
elif [ "$1" = "3" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/kernels" "$STAGE/yardstick" "$STAGE/pipelines"
    { echo "$STAMP"; timeout 100 python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1; } | tee "$STAGE/tests/GPU_RESULTS.txt"
    timeout 100 python3 yardstick/sweep.py --device cuda --out "$STAGE/yardstick" 2>&1 | grep -v "it/s" | tail -30
    timeout 60 python3 pipelines/bench_methods.py --models cogvideox-5b --variants attention \
        --out "$STAGE/pipelines" 2>&1 | tail -5
    timeout 150 python3 pipelines/bench_methods.py --models hunyuanvideo --variants offload,attention --runs 2 \
        --out "$STAGE/pipelines" 2>&1 | tail -8
    timeout 160 python3 kernels/bench.py --only columns --no-flex-columns --out "$STAGE/kernels" 2>&1 | tail -60
elif [ "$1" = "4" ]; then
    mkdir -p "$STAGE/pipelines"
    timeout 120 python3 pipelines/bench_methods.py --models cogvideox-5b --variants stock,profile --runs 3 \
        --out "$STAGE/pipelines" 2>&1 | tail -5
    timeout 300 python3 pipelines/bench_methods.py --models hunyuanvideo --variants stock,profile --runs 1 \
        --out "$STAGE/pipelines" 2>&1 | tail -5
elif [ "$1" = "5" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/yardstick" "$STAGE/pipelines"
    { echo "$STAMP"; timeout 120 python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1; } | tee "$STAGE/tests/GPU_RESULTS.txt"
    timeout 260 python3 yardstick/sweep.py --device cuda --out "$STAGE/yardstick" 2>&1 | grep -v "it/s" | tail -45
    cp "$STAGE/yardstick/sweep.json" yardstick/sweep.json  # the hybrid mix the CogVideoX bench forces
    timeout 150 python3 pipelines/bench_methods.py --models cogvideox-5b --variants stock,dense,delta,hybrid --runs 3 \
        --out "$STAGE/pipelines" 2>&1 | tail -12
elif [ "$1" = "7" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/pipelines"
    { echo "$STAMP"; timeout 120 python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1; } | tee "$STAGE/tests/GPU_RESULTS.txt"
    timeout 200 python3 pipelines/bench_methods.py --models cogvideox-5b --variants stock,dense,delta,hybrid --runs 3 \
        --trace-hybrid --out "$STAGE/pipelines" 2>&1 | tail -40
elif [ "$1" = "8" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/kernels" "$STAGE/yardstick" "$STAGE/vidsparse/search/patterns"
    P=vidsparse/search/patterns
    timeout 120 python3 -m vidsparse search --model yardstick --device cuda --out $P/yardstick.safetensors \
        > "$STAGE/search_yardstick.log" 2>&1 &
    SEARCH=$!
    timeout 120 python3 -m vidsparse search --model yardstick-long --device cuda --out $P/yardstick-long.safetensors \
        > "$STAGE/search_yardstick-long.log" 2>&1
    wait $SEARCH  # by pid: a bare `wait` also waits for the log's tee, which never ends
    tail -n 3 "$STAGE"/search_*.log
    cp $P/yardstick.safetensors $P/yardstick-long.safetensors "$STAGE/$P/"
    timeout 260 python3 yardstick/sweep.py --device cuda --budget-s 215 --out "$STAGE/yardstick" 2>&1 \
        | grep -v "it/s" | tail -50
    timeout 90 python3 kernels/bench_dynamic.py --out "$STAGE/kernels" 2>&1 | tail -30
    { echo "$STAMP" | sed 's| tests -p| tests/test_dynamic.py tests/test_column_sparse.py::test_narrow_lists_compile_on_the_gpu -p|'
      timeout 50 python3 -m pytest -q -m gpu tests/test_dynamic.py \
        tests/test_column_sparse.py::test_narrow_lists_compile_on_the_gpu -p no:cacheprovider 2>&1 | tail -15
    } | tee "$STAGE/tests/GPU_RESULTS_dynamic.txt"
elif [ "$1" = "10" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/kernels"
    { echo "$STAMP"; timeout 150 python3 -m pytest -q -m gpu tests -p no:cacheprovider --tb=short -rfE 2>&1; } \
        | tee "$STAGE/tests/GPU_RESULTS.txt" | tail -30
    timeout 200 python3 kernels/bench_subtractable.py --out "$STAGE/kernels/subtractable.json" 2>&1 | tail -20
elif [ "$1" = "11" ]; then
    mkdir -p "$STAGE/yardstick"
    timeout 480 python3 yardstick/long_settings.py --device cuda --seeds 3 --out "$STAGE/yardstick/long_settings" 2>&1 \
        | grep -v "it/s" | tail -12
elif [ "$1" = "12" ]; then
    # after part 11 set the long model's CFG to 2: its pattern file searched again, its card, and both sweeps
    mkdir -p "$STAGE/yardstick" "$STAGE/vidsparse/search/patterns"
    P=vidsparse/search/patterns
    timeout 150 python3 -m vidsparse search --model yardstick-long --device cuda --out $P/yardstick-long.safetensors \
        > "$STAGE/search_yardstick-long.log" 2>&1
    tail -n 3 "$STAGE/search_yardstick-long.log"
    cp $P/yardstick-long.safetensors "$STAGE/$P/"
    timeout 90 python3 yardstick/make_card.py --long --device cuda --run yardstick/training --out "$STAGE/yardstick" \
        2>&1 | grep -v "it/s" | tail -12
    timeout 340 python3 yardstick/sweep.py --device cuda --budget-s 300 --out "$STAGE/yardstick" 2>&1 \
        | grep -v "it/s" | tail -40
elif [ "$1" = "13" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/kernels" "$STAGE/pipelines"
    { echo "$STAMP"; timeout 170 python3 -m pytest -q -m gpu tests -p no:cacheprovider --tb=short -rfE 2>&1; } \
        | tee "$STAGE/tests/GPU_RESULTS.txt" | tail -30
    timeout 150 python3 kernels/bench_refresh.py --out "$STAGE/kernels/refresh.json" 2>&1 | tail -50
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 230 python3 pipelines/bench_methods.py \
        --models hunyuanvideo --variants stock,delta,offload --runs 1 --budget-s 190 --out "$STAGE/pipelines" 2>&1 \
        | tail -12
elif [ "$1" = "14" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/kernels" "$STAGE/pipelines"
    { echo "$STAMP"; timeout 150 python3 -m pytest -q -m gpu tests -p no:cacheprovider --tb=short -rfE 2>&1
      echo "# python3 -m pytest -q tests/test_block_sparse.py tests/test_column_sparse.py -k 'exclud or selection' -p no:cacheprovider  (the CPU's tests, on the GPU)"
      timeout 60 python3 -m pytest -q tests/test_block_sparse.py tests/test_column_sparse.py -k 'exclud or selection' \
          -p no:cacheprovider --tb=short 2>&1; } \
        | tee "$STAGE/tests/GPU_RESULTS.txt" | tail -30
    timeout 150 python3 kernels/bench_refresh.py --out "$STAGE/kernels/refresh.json" 2>&1 | tail -50
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 230 python3 pipelines/bench_methods.py \
        --models hunyuanvideo --variants stock,dense,delta --runs 1 --budget-s 230 --out "$STAGE/pipelines" 2>&1 \
        | tail -12
elif [ "$1" = "15" ]; then
    mkdir -p "$STAGE/pipelines"
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 580 python3 pipelines/bench_loop.py --method hybrid \
        --force-mix --stock-steps 0 --stock-from pipelines/LOOP_hunyuanvideo_delta.json --time-limit-s 560 \
        --out "$STAGE/pipelines" 2>&1 | tail -20
elif [ "$1" = "16" ]; then
    mkdir -p "$STAGE/yardstick"
    timeout 340 python3 yardstick/sweep.py --device cuda --budget-s 300 --out "$STAGE/yardstick" 2>&1 \
        | grep -v "it/s" | tail -40
elif [ "$1" = "17" ]; then
    mkdir -p "$STAGE/tests" "$STAGE/kernels"
    { echo "$STAMP -k 'packed or selection'"
      timeout 120 python3 -m pytest -q -m gpu tests/test_column_sparse.py -k 'packed or selection' -p no:cacheprovider \
          --tb=short -rfE 2>&1; } | tee "$STAGE/tests/GPU_RESULTS_packed.txt" | tail -20
    timeout 400 python3 kernels/bench.py --only columns --no-flex-columns --out "$STAGE/kernels" 2>&1 | tail -30
elif [ "$1" = "9" ]; then
    mkdir -p "$STAGE/pipelines"
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 330 python3 pipelines/bench_methods.py \
        --models hunyuanvideo --variants stock,dense,dynamic --runs 1 --dynamic-density "${DENSITY:-1.0}" --dynamic-top-p "${TOP_P:-0.9}" \
        --out "$STAGE/pipelines" 2>&1 | tail -10
    if [ -f pipelines/bench_loop.py ]; then
        PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 250 python3 pipelines/bench_loop.py \
            --time-limit-s 230 --out "$STAGE/pipelines" 2>&1 | tail -20
    fi
elif [ "$1" = "6" ]; then
    mkdir -p "$STAGE/pipelines"
    # the hybrid keeps every head's delta cache (71 GB at 720p) next to its plans: 40 GiB on the GPU, the rest on the
    # host (a first run with no budget ran out of GPU memory); delta itself was measured in that first run
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 560 python3 pipelines/bench_methods.py \
        --models hunyuanvideo --variants stock,dense,hybrid --runs 1 --hybrid-cache-budget 40 --budget-s 420 \
        --out "$STAGE/pipelines" 2>&1 | tail -14
else
    mkdir -p "$STAGE/pipelines"
    cp yardstick/sweep.json "$STAGE/pipelines/" 2>/dev/null || echo "no yardstick/sweep.json: the default profile mix"
    timeout 120 python3 pipelines/bench_methods.py --models cogvideox-5b --runs 3 --out "$STAGE/pipelines" 2>&1 | tail -30
    timeout 440 python3 pipelines/bench_methods.py --models hunyuanvideo --runs 1 --budget-s 330 \
        --out "$STAGE/pipelines" 2>&1 | tail -40
fi
tar -czf "$OUT/results.tar.gz" -C "$STAGE" .
ls -la "$OUT"
