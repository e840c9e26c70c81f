"""Per-family training recipes (spec section 7): augmentation, loss and weight decay.

PP-ShiTuV2_rec: CE with label smoothing 0.1 on the FC head's logits + TripletAngularMarginLoss on
the BN-neck features, L2 decay 1e-5. CLIP: CE on ArcMargin(0.2, 30) logits, L2 decay 2e-5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from imgfeat_cli.training.augment import Augment, clip_augment, shitu_augment


@dataclass(frozen=True)
class Recipe:
    family: str
    weight_decay: float
    first: Optional[Callable[[np.ndarray], np.ndarray]]
    augment: Augment
    loss: Callable[[Dict[str, Any], Any], Tuple[Any, Dict[str, Any]]]


def _shitu_loss(out: Dict[str, Any], labels: Any) -> Tuple[Any, Dict[str, Any]]:
    from imgfeat_cli.training.losses import label_smoothing_ce, triplet_angular_margin_loss

    ce = label_smoothing_ce(out["logits"], labels, epsilon=0.1)
    tri = triplet_angular_margin_loss(out["features"], labels)
    return ce + tri, {"ce": ce, "triplet": tri}


def _clip_loss(out: Dict[str, Any], labels: Any) -> Tuple[Any, Dict[str, Any]]:
    from imgfeat_cli.training.losses import label_smoothing_ce

    ce = label_smoothing_ce(out["logits"], labels, epsilon=0.0)
    return ce, {"arcface_ce": ce}


def recipe_for(name: str, input_size: int) -> Recipe:
    """The recipe a registry family names (``Family.recipe``): PP-ShiTuV2 or CLIP."""
    if name == "PP-ShiTuV2":
        first, rest = shitu_augment(input_size)
        return Recipe("PP-ShiTuV2", 1e-5, first, rest, _shitu_loss)
    first_c, rest_c = clip_augment(input_size)
    return Recipe("CLIP", 2e-5, first_c, rest_c, _clip_loss)
