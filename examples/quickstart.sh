#!/usr/bin/env bash
# Offline quickstart on a generated demo dataset, end to end:
# check -> split -> train (short) -> eval -> export -> embed. A few minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="$here/demo_dataset"
out="$here/output"
# A previous quickstart's results are kept (one generation, as output.bak), never silently deleted;
# the demo dataset is generated, so it is simply made again.
if [ -e "$out" ]; then
    rm -rf "$out.bak"
    mv "$out" "$out.bak"
    echo "quickstart: the previous run's results are kept in $out.bak" >&2
fi
rm -rf "$data"
mkdir -p "$out"
python "$here/make_demo_dataset.py" "$data"
imgfeat check --dataset "$data" --output "$out/check"
imgfeat split --dataset "$data" --train 50 --gallery 30 --query 20 --seed 1
imgfeat check --dataset "$data" --output "$out/check_resplit" --quiet > /dev/null
imgfeat train --dataset "$data" -c "$here/demo_train.yaml" --output "$out/train"
imgfeat eval --dataset "$data" --weights "$out/train/best_model/best_model.pdparams" --output "$out/eval"
imgfeat export --weights "$out/train/best_model/best_model.pdparams" --out "$out/inference"
imgfeat embed "$data/images" --model-dir "$out/inference" --out "$out/feats.jsonl"
cat <<EOF
quickstart finished: reports, checkpoints, model and features in $out

Next, with your own images (the official PP-ShiTuV2_rec is downloaded on first use):
  imgfeat embed PATH/TO/PHOTOS --out feats.parquet
or with the model trained here:
  imgfeat embed PATH/TO/PHOTOS --model-dir $out/inference --out feats.parquet
and a searchable gallery index (needs faiss: pip install -e ".[retrieval]"):
  imgfeat index build -g $data/gallery.txt --model-dir $out/inference --out $out/index
  imgfeat search --index $out/index --model-dir $out/inference $data/images --top-k 3
EOF
