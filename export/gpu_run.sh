#!/usr/bin/env bash
# One GPU lease, prepared on the CPU machine (docs/model.md, "GPU training"). Run from the repository root
# with the carry folder beside it and OUT set; everything it measures and trains lands under $OUT:
#   gpu.txt                        the card, its memory and driver
#   speed_gpu_fp32.json / _amp     model updates alone (export.train_speed), to set against this CPU's
#   run/log.jsonl, run/checkpoint.pt   a time-boxed SED fine-tune by the recipe of the shipped detector
#                                  (real16: --init/--rehearse real7, weight 2), batches cut by feeder processes
# The carry folder (ignored by git) holds: whl/ (soundfile, cffi, pycparser, soxr, pyroomacoustics wheels
# for the image's Python), real7_weights.pt (real7 without optimiser state) and realbank8_train.npz
# (`write_packed(..., max_per_folder=45, max_seconds=12)`: the 64 MiB carry limit).
# DEVICE=cpu MINUTES=0.3 FEEDERS=1 BATCH=16 runs the same steps here (a dry run before a lease); SPEED=0 skips
# the speed probe, AMP= trains in float32, RECIPE=scratch trains the larger detector SED from scratch instead;
# with it, INIT=FILE starts from that checkpoint in the carry folder (a fresh schedule) and TEACHER=FILE distils
# that (smaller) SED's probabilities on procedural scenes into it (--rehearse, weight 2).
# Exit codes: 3 the wheels did not install, 4 the fail-fast check failed, 5 the speed probe failed; otherwise
# the trainer's.
set -u -o pipefail
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
CARRY=${CARRY:-.gpu}
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-5.5}
FEEDERS=${FEEDERS:-11}  # + a third as many for the teacher's windows: 14 of the H200 machine's 16 cores
BATCH=${BATCH:-128}
AMP=${AMP---amp}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$CARRY"/whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site:$PWD
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
    nproc --all >> "$OUT/gpu.txt"
else
    export PYTHONPATH=$PWD
fi
# Fail in seconds, not minutes, when something the run needs is missing.
DEVICE="$DEVICE" CARRY="$CARRY" python3 -c "
import os, torch, soundfile, soxr, pyroomacoustics, rich, export.train, export.train_speed
from stream_s5.synth.soundbank import Soundbank
assert os.environ['DEVICE'] == 'cpu' or torch.cuda.is_available(), 'no CUDA device'
bank = Soundbank.from_folder(os.path.join(os.environ['CARRY'], 'realbank8_train.npz'), 16000)
print('torch', torch.__version__, 'bank classes with real clips', len(bank.available_classes))
" || exit 4
SPEED_SED=${SPEED_SED:-32 128 512}
if [ "${SPEED:-1}" = 1 ]; then
    python3 -m export.train_speed --init "$CARRY/real7_weights.pt" --device "$DEVICE" --sed-batches $SPEED_SED \
        --sep-batches 16 64 --out "$OUT/speed_gpu_fp32.json" || exit 5
    python3 -m export.train_speed --init "$CARRY/real7_weights.pt" --device "$DEVICE" --amp --sed-batches $SPEED_SED \
        --sep-batches 16 64 --out "$OUT/speed_gpu_amp.json" || exit 5
fi
if [ "${RECIPE:-fine}" = scratch ]; then  # the larger detector SED (preset real_scratch)
    EXTRA=()
    [ -n "${INIT:-}" ] && EXTRA+=(--init "$CARRY/$INIT")
    [ -n "${TEACHER:-}" ] && EXTRA+=(--rehearse "$CARRY/$TEACHER" --rehearse-weight 2.0)
    python3 -m export.train --preset real_scratch --train sed --soundbank "$CARRY/realbank8_train.npz" \
        --device "$DEVICE" $AMP --sed-feeders "$FEEDERS" --sed-batch "$BATCH" --windows-per-scene 16 --steps 100000 \
        --minutes "$MINUTES" --out "$OUT/run" --quiet ${EXTRA[@]+"${EXTRA[@]}"}
else  # gpu1's recipe: real16's, fine-tuning real7 with rehearsal
    python3 -m export.train --preset real --init "$CARRY/real7_weights.pt" --rehearse "$CARRY/real7_weights.pt" \
        --rehearse-weight 2.0 --train sed --soundbank "$CARRY/realbank8_train.npz" --device "$DEVICE" $AMP \
        --sed-feeders "$FEEDERS" --sed-batch "$BATCH" --windows-per-scene 16 --steps 100000 --minutes "$MINUTES" \
        --lr 4e-4 --out "$OUT/run" --quiet
fi
