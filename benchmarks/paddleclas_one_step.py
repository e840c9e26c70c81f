"""One PP-ShiTuV2_rec training step in PaddleClas, recorded for ``tests/test_train_parity.py``.

    # 1. in imgfeat's venv: the inputs (imgfeat's seeded initial weights and a seeded batch)
    python benchmarks/paddleclas_one_step.py inputs DIR
    # 2. in a PaddleClas venv (paddlepaddle + PaddleClas's requirements), with PaddleClas's source:
    /work/pdc-venv/bin/python benchmarks/paddleclas_one_step.py record DIR --paddleclas-src /work/pdc-src \\
        --label "PaddleClas COMMIT"
    # -> DIR/paddleclas_one_step.json; copy it to tests/data/ when PaddleClas or the recipe changes

``record`` builds the model, the losses and the optimiser through PaddleClas's own builders from
PaddleX's PP-ShiTuV2_rec config (``RecModel``: PPLCNetV2_base_ShiTu, BNNeck with its frozen bias, FC
head; CELoss eps 0.1 + TripletAngularMarginLoss; Momentum 0.9, Cosine without warm-up), loads the
weights, runs forward, backward and one optimiser step on the batch, and writes the losses and, per
parameter, the norms of its gradient, of the optimiser's velocity and of the update. The L2 decay is
0.1 instead of the recipe's 1e-5 so that which tensors get it shows plainly in the velocities (the
backbone BatchNorms get none). Nothing of PaddleClas is imported by imgfeat or its tests.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

CLASSES, BATCH, SIZE, LR, DECAY, EPOCHS, STEPS, DROPOUT_SEED = 4, 8, 64, 0.01, 0.1, 2, 3, 123


def digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode() + arrays[k].tobytes())
    return h.hexdigest()[:16]


def make_inputs(folder: Path) -> None:
    import numpy as np
    import paddle

    from imgfeat_cli.models.registry import build_model

    paddle.seed(0)
    model = build_model("PP-ShiTuV2_rec", num_classes=CLASSES)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype("float32")
    y = np.repeat(np.arange(BATCH // 4), 4).astype("int64")
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "inputs.npz", x=x, y=y, **{f"w:{k}": v for k, v in weights.items()})
    print(f"weights {digest(weights)}, batch {digest({'x': x, 'y': y})} -> {folder / 'inputs.npz'}")


def record(folder: Path, src: str, label: str) -> None:
    import numpy as np
    import paddle

    sys.path.insert(0, src)
    from ppcls.arch import build_model
    from ppcls.loss import build_loss
    from ppcls.optimizer import build_optimizer
    from ppcls.utils import logger

    logger.init_logger()

    z = np.load(folder / "inputs.npz")
    weights = {k[2:]: z[k] for k in z.files if k.startswith("w:")}
    arch = {"name": "RecModel", "infer_output_key": "features", "infer_add_softmax": False,
            "Backbone": {"name": "PPLCNetV2_base_ShiTu", "pretrained": False, "use_ssld": True, "class_expand": 512},
            "BackboneStopLayer": {"name": "flatten"},
            "Neck": {"name": "BNNeck", "num_features": 512,
                     "weight_attr": {"initializer": {"name": "Constant", "value": 1.0}},
                     "bias_attr": {"initializer": {"name": "Constant", "value": 0.0}, "learning_rate": 1.0e-20}},
            "Head": {"name": "FC", "embedding_size": 512, "class_num": CLASSES,
                     "weight_attr": {"initializer": {"name": "Normal", "std": 0.001}}, "bias_attr": False}}
    model = build_model({"Arch": arch, "Global": {"device": "cpu"}})
    extra = set(weights) - set(model.state_dict())  # imgfeat's head.fc.bias, held at 0 (bias_attr False here)
    assert not set(model.state_dict()) - set(weights) and extra <= {"head.fc.bias"}, sorted(extra)
    assert not any(np.any(weights[k]) for k in extra)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items() if k not in extra})
    model.train()
    loss_fn = build_loss([{"CELoss": {"weight": 1.0, "epsilon": 0.1}},
                          {"TripletAngularMarginLoss": {"weight": 1.0, "feature_from": "features", "margin": 0.5,
                                                        "reduction": "mean", "add_absolute": True,
                                                        "absolute_loss_weight": 0.1, "normalize_feature": True,
                                                        "ap_value": 0.8, "an_value": 0.4}}])
    opt, _ = build_optimizer({"name": "Momentum", "momentum": 0.9,
                              "lr": {"name": "Cosine", "learning_rate": LR, "warmup_epoch": 0},
                              "regularizer": {"name": "L2", "coeff": DECAY}}, EPOCHS, STEPS, [model])
    opt = opt[0] if isinstance(opt, list) else opt
    x, y = paddle.to_tensor(z["x"]), paddle.to_tensor(z["y"]).reshape([-1, 1])
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    paddle.seed(DROPOUT_SEED)  # the backbone's dropout draws its mask from paddle's generator
    out = model(x, y)
    losses = loss_fn(out, y)
    losses["loss"].backward()
    names = {p.name: k for k, p in model.named_parameters()}
    grads = {names[p.name]: float(np.linalg.norm(p.grad.numpy())) for p in model.parameters() if p.grad is not None}
    opt.step()
    velocity = {names[p]: float(np.linalg.norm(v.numpy())) for p, v in opt._accumulators["velocity"].items()}
    after = model.state_dict()
    update = {k: float(np.linalg.norm(after[k].numpy().astype("float64") - before[k])) for k in grads}
    doc = {"recorded_with": {"paddle": paddle.__version__, "paddleclas": label or src},
           "inputs": {"weights": digest(weights), "batch": digest({"x": z["x"], "y": z["y"]})},
           "config": {"classes": CLASSES, "batch": BATCH, "size": SIZE, "lr": LR, "decay": DECAY,
                      "epochs": EPOCHS, "steps": STEPS, "dropout_seed": DROPOUT_SEED},
           "losses": {k: float(v) for k, v in losses.items()},
           "features_norm": float(np.linalg.norm(out["features"].numpy())),
           "grad_norm": grads, "velocity_norm": velocity, "update_norm": update}
    (folder / "paddleclas_one_step.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
    print(f"{len(grads)} gradients, losses {doc['losses']} -> {folder / 'paddleclas_one_step.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["inputs", "record"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--paddleclas-src")
    ap.add_argument("--label", default="", help="what PaddleClas is (e.g. its commit), for the record")
    args = ap.parse_args()
    if args.what == "inputs":
        make_inputs(args.folder)
    else:
        record(args.folder, args.paddleclas_src or ap.error("record needs --paddleclas-src"), args.label)


if __name__ == "__main__":
    main()
