#!/usr/bin/env bash
# Offline quickstart on a generated demo dataset, end to end:
# check -> split -> train (short) -> eval -> export -> embed. A few minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/demo_dataset"
out="$here/output"
rm -rf "$data" "$out"
mkdir -p "$out"
python "$here/make_demo_dataset.py" "$data"
imgfeat check --dataset "$data" --output "$out/check"
imgfeat split --dataset "$data" --train 50 --gallery 30 --query 20 --seed 1
imgfeat check --dataset "$data" --output "$out/check_resplit" --quiet > /dev/null
imgfeat train --dataset "$data" -c "$here/demo_train.yaml" --output "$out/train"
imgfeat eval --dataset "$data" --weights "$out/train/best_model/best_model.pdparams" --output "$out/eval"
imgfeat export --weights "$out/train/best_model/best_model.pdparams" --out "$out/inference"
imgfeat embed "$data/images" --model-dir "$out/inference" --out "$out/feats.jsonl"
echo "quickstart finished: reports, checkpoints, model and features in $out"
