"""Generate the offline demo ShiTuRecDataset (synthetic shapes; nothing downloaded).

    python examples/make_demo_dataset.py [OUT_DIR]
"""
import sys
from pathlib import Path

from imgfeat_cli.core.synthetic import make_dataset

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "demo_dataset")
entries = make_dataset(out, num_classes=12, per_class=16, size=96, seed=0)
print(f"wrote {len(entries)} images in 12 classes to {out}")
