#!/usr/bin/env bash
# Runs bench_gpu.py on a lent GPU machine that takes at most 64 MiB a call (see README.md here).
#
#   start      GPU and Python check; builds and installs embedrank there in the background;
#              keeps .gpu1/part (and .gpu1/payload.sha) in /tmp/parts
#   part N     keeps .gpuN/part in /tmp/parts (one call per part, the machine kept warm)
#   bench N [ARGS]  keeps .gpuN/part, joins parts 1..N, checks the sha256, unpacks
#              onnxruntime-gpu into /tmp/site, waits for the build, runs bench_gpu.py into $OUT
#              (ARGS go to bench_gpu.py)
#
# The payload (made by prepare_payload.sh): cuda.so.xz (onnxruntime-gpu's CUDA provider),
# rest.tar.xz (the rest of its onnxruntime package), model/ (the fp16 variants), hf/ (the same
# weights for sentence-transformers), scifact.tar.xz.
set -u
step=${1:?step: start, part N or bench N}
mkdir -p /tmp/parts

keep_part() {
    local n=$1
    if [[ -f .gpu$n/part ]]; then
        cp .gpu$n/part /tmp/parts/$n
    fi
    [[ -f .gpu$n/payload.sha ]] && cp .gpu$n/payload.sha /tmp/parts/payload.sha
    ls -l /tmp/parts
}

case $step in
start)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -V
    python3 -c "import sysconfig, os; p = sysconfig.get_paths()['include']; print(p, os.path.exists(p + '/Python.h'))"
    rm -rf /tmp/er_src && mkdir -p /tmp/er_src
    tar --exclude='./.gpu*' --exclude=./build -cf - . | tar -C /tmp/er_src -xf -
    setsid nohup bash -c 'cd /tmp/er_src && python3 -m pip install --no-build-isolation --no-deps . > /tmp/build.log 2>&1; echo "rc=$?" >> /tmp/build.log' > /dev/null 2>&1 < /dev/null &
    keep_part 1
    ;;
part)
    keep_part "${2:?part number}"
    tail -n 3 /tmp/build.log 2>/dev/null
    ;;
bench)
    last=${2:?number of parts}
    keep_part "$last"
    for n in $(seq 1 "$last"); do cat /tmp/parts/$n; done > /tmp/payload.tar
    echo "$(cat /tmp/parts/payload.sha)  /tmp/payload.tar" | sha256sum -c - || exit 3
    rm -rf /tmp/payload /tmp/site && mkdir -p /tmp/payload /tmp/site
    tar -C /tmp/payload -xf /tmp/payload.tar
    tar -C /tmp/site -xJf /tmp/payload/rest.tar.xz
    xz -dc /tmp/payload/cuda.so.xz > /tmp/site/onnxruntime/capi/libonnxruntime_providers_cuda.so
    tar -C /tmp/payload -xJf /tmp/payload/scifact.tar.xz
    # graphs/ (optional): fp16 graphs to compare; the model folder's own fp16 graph joins them
    [[ -d /tmp/payload/graphs ]] && cp /tmp/payload/model/model_fp16.onnx /tmp/payload/graphs/fused_fp16.onnx
    for _ in $(seq 1 150); do grep -q '^rc=' /tmp/build.log 2>/dev/null && break; sleep 2; done
    tail -n 2 /tmp/build.log
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    python3 benchmarks/gpu/bench_gpu.py /tmp/payload/model --source /tmp/payload/hf \
        --data /tmp/payload/scifact --out "$OUT" "${@:3}" 2>&1 | tee "$OUT/log.txt"
    ;;
*)
    echo "unknown step $step" >&2
    exit 2
    ;;
esac
