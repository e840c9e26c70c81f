"""Generate the offline demo ShiTuRecDataset (synthetic coloured shapes; nothing downloaded).

    python examples/make_demo_dataset.py [OUT_DIR]

8 classes x 24 images at 96 px, each class a different colour and shape, so a network trained
from random initialisation for a minute on 2 cores already retrieves clearly better than chance.
"""
import sys
from pathlib import Path

from imgfeat_cli.datasets.synthetic import make_dataset

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "demo_dataset")
entries = make_dataset(out, num_classes=8, per_class=24, size=96, seed=0, distinct_colours=True)
print(f"wrote {len(entries)} images in 8 classes to {out}")
