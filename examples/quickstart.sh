#!/usr/bin/env bash
# Offline quickstart on a generated demo dataset: check -> split -> check again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/demo_dataset"
out="$here/output"
rm -rf "$data" "$out"
python "$here/make_demo_dataset.py" "$data"
imgfeat check --dataset "$data" --output "$out/check"
imgfeat split --dataset "$data" --train 60 --gallery 25 --query 15 --seed 1
imgfeat check --dataset "$data" --output "$out/check_resplit" --quiet
echo "quickstart finished: reports in $out"
