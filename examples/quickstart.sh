#!/usr/bin/env bash
# Offline quickstart on a generated demo dataset: check -> split -> export -> embed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/demo_dataset"
out="$here/output"
rm -rf "$data" "$out"
mkdir -p "$out"
python "$here/make_demo_dataset.py" "$data"
imgfeat check --dataset "$data" --output "$out/check"
imgfeat split --dataset "$data" --train 60 --gallery 25 --query 15 --seed 1
imgfeat check --dataset "$data" --output "$out/check_resplit" --quiet > /dev/null
python "$here/make_demo_checkpoint.py" "$out/demo.pdparams"
imgfeat export --weights "$out/demo.pdparams" --out "$out/inference"
imgfeat embed "$data/images" --model-dir "$out/inference" --out "$out/feats.jsonl"
echo "quickstart finished: reports, model and features in $out"
