#!/usr/bin/env bash
# The GPU checks, as one prepared run on a lent GPU machine (no package registry there).
#
#   Here, once: the wheels Vista needs beyond that machine's image (its python3 has torch, h5py,
#   numpy, safetensors, pynvml, pytest), for CPython 3.12, into .whl/ (git-ignored locally):
#     echo /.whl/ >> .git/info/exclude
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl transformers==5.25.0 huggingface_hub==2.4.0 \
#       kernels==0.19.1 peft==0.21.2 tokenizers==0.23.3 hydra-core==1.3.8 omegaconf==2.3.1 \
#       httpx2 httpcore2 click tomlkit truststore idna anyio h11 typing_extensions
#     pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
#   There (the device tool, carry .whl):  bash benchmarks/gpu_check.sh
#
# Runs the CUDA tests (one copy of the frozen weights per GPU), then benchmarks/cuda_weights.py.
# Logs and the benchmark's rows go to $OUT (default /tmp/gpu_check).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
site=/tmp/vista_site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
fi
[ -e src/vista/conf ] || ln -s ../../conf src/vista/conf  # what the editable install maps (vista.conf)
export PYTHONPATH="$site:$PWD/src:$PWD/tests:$PWD/benchmarks"
if ! python3 -c "import transformers, peft, hydra" 2>"$OUT/import_error.txt"; then
  echo "carried transformers/peft do not import here (see import_error.txt): the image's, with hydra only"
  rm -rf "$site" && python3 -m pip install -q --no-index --no-deps --target "$site" .whl/hydra_core-*.whl \
    .whl/omegaconf-*.whl .whl/antlr4_python3_runtime-*.whl
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  python3 -c "import sys, torch, transformers, peft; print(sys.version.split()[0], torch.__version__, \
torch.version.cuda, transformers.__version__, peft.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
timeout 180 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/integration/test_cuda_weights.py \
  tests/unit/test_device_weights.py 2>&1 | tee "$OUT/pytest.log" | tail -25
timeout "${BENCH_TIMEOUT:-320}" python3 benchmarks/cuda_weights.py --json "$OUT/cuda_weights.json" \
  --workdir /tmp/cuda_weights ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -30
