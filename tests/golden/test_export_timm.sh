#!/bin/bash
# tests/golden/test_export_timm.sh: `poa export` loads into timm with strict=True (by
# config.json through local-dir:, and by model_args + load_state_dict) and timm's features
# equal `poa forward` of the checkpoint within 1e-5, for members 96x4 (intact), 32x2 and 64x3
# of a 2-step tiny_train checkpoint (tests/golden/check_export_timm.py). Needs a Python with
# torch, timm and safetensors: $POA_PYTHON, else python3; SKIP where there is none (CI).
set -u
cd "$(dirname "$0")/../.."
python=${POA_PYTHON:-python3}
if ! "$python" -c "import torch, timm, safetensors" 2> /dev/null; then
  echo "SKIP export into timm: no torch, timm and safetensors in $python (set POA_PYTHON)"; exit 0
fi
poa=build/poa
dir=build/tests/export_timm
rm -rf "$dir" && mkdir -p "$dir"
$poa data fashion-mnist --out "$dir/fm" --limit 64 > /dev/null 2>&1
$poa train tests/recipes/tiny_train.lua "data.train=$dir/fm/train" "train.output=$dir/run" train.threads=1 \
  train.loader_threads=1 --steps 2 --device cpu > "$dir/train.log" 2>&1
checkpoint=$dir/run/checkpoint_2.safetensors
[ -f "$checkpoint" ] || { echo "FAIL export into timm: no checkpoint"; cat "$dir/train.log"; exit 1; }
for net in 96x4 32x2 64x3; do
  if ! $poa export "$checkpoint" --net $net --out "$dir/$net" > "$dir/$net.log" 2>&1; then
    echo "FAIL export $net: $(cat "$dir/$net.log")"; continue
  fi
  "$python" -W ignore tests/golden/check_export_timm.py --poa $poa --recipe tests/recipes/tiny_train.lua \
    --checkpoint "$checkpoint" --export "$dir/$net" --net $net --work "$dir" > "$dir/check.log" 2>&1
  rc=$?
  grep -v Warning "$dir/check.log"
  if [ $rc -ne 0 ] && ! grep -q '^FAIL' "$dir/check.log"; then echo "FAIL export $net into timm: exit $rc"; fi
done
