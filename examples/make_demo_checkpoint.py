"""Save a PP-ShiTuV2_rec checkpoint with seeded random weights, for the offline quickstart.

    python examples/make_demo_checkpoint.py OUT.pdparams

Its features carry no meaning (the weights are untrained); it exercises export and embed with the
same architecture and compute as the official model. With network access, use the official model
instead: `imgfeat embed photos/ --out feats.jsonl` downloads it on first use.
"""
import sys

import paddle

from imgfeat_cli.models.registry import build_model

paddle.seed(0)
paddle.save(build_model("PP-ShiTuV2_rec").state_dict(), sys.argv[1])
print(f"wrote {sys.argv[1]}")
