"""An index remembers its model, and nothing searches it with another by accident.

Vectors of two models live in unrelated spaces: a query embedded by model B against a gallery of
model A scores about 0.01 and matches nothing, or the wrong thing, with exit 0. So every index
imgfeat writes records the model that made its vectors (``EmbeddingModel.record``): where it came
from (the folder or checkpoint as given and resolved, or the registry name), its name, the sha256
of its files, the model it was quantized from, its precision, feature width and pre-processing.
``search`` and ``index add`` then use that model when none is named (:func:`source_for`), and
refuse another (:func:`check`) unless the caller allows it (``--allow-other-model``: a warning,
recorded).

"The same model" is the same weights: the same files (sha256), or an int8 folder made by
``imgfeat quantize`` from them (its ``inference.yml`` records the source's sha256: its *lineage*).
Indexes built by PaddleX record nothing: they work as before, with a note that the model cannot be
checked.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.models.source import ModelSource

UNCHECKED_NOTE = ("this index records no model (built by PaddleX, by an older imgfeat, or from vectors that "
                  "name none), so the query model cannot be checked against it")


def describe(record: Optional[Dict[str, Any]]) -> str:
    """A model record in a few words: its name, where it came from and a short hash."""
    if not record:
        return "an unrecorded model"
    src = record.get("source") or {}
    where = src.get("given") or src.get("resolved")
    sha = str(record.get("sha256") or "")[:8]
    return f"{record.get('name')}" + (f" ({where}, sha256 {sha})" if where else f" (sha256 {sha})")


def same_model(recorded: Optional[Dict[str, Any]], other: Optional[Dict[str, Any]]) -> bool:
    """Whether ``other`` makes the vectors ``recorded`` describes: the same files, or files
    quantized from them (or they from ``other``'s). Unknown on either side counts as the same."""
    if not recorded or not other:
        return True
    ours = {recorded.get("sha256"), recorded.get("lineage")} - {None}
    theirs = {other.get("sha256"), other.get("lineage")} - {None}
    if ours and theirs:
        return bool(ours & theirs)
    return recorded.get("name") == other.get("name")


def check(recorded: Optional[Dict[str, Any]], other: Optional[Dict[str, Any]], what: str,
          allow_other: bool = False, warn: Callable[[str], None] = lambda m: None,
          what_of: str = "the index's vectors") -> Optional[str]:
    """Refuse ``other`` (the model that made ``what``) when it is not ``recorded`` (the model of
    ``what_of``: the index's); with ``allow_other`` say so through ``warn`` and return the warning
    (to be recorded)."""
    if same_model(recorded, other):
        return None
    text = (f"{what} come from {describe(other)}, but {what_of} come from {describe(recorded)}: "
            "they are not comparable")
    if not allow_other:
        raise UsageError(text, hint="leave out the model options to use the index's own model, or pass "
                         "--allow-other-model if the models are meant to share one space")
    message = f"{text} (allowed by --allow-other-model)"
    warn(message)
    return message


def source_for(recorded: Optional[Dict[str, Any]], given: ModelSource, log: Callable[[str], None] = lambda m: None,
               default: Optional[str] = None) -> ModelSource:
    """The model to embed queries or new gallery images with: the one named (``given``), else the
    index's own (its folder as recorded, if it still exists; its checkpoint; its registry name),
    else ``default`` (a registry name) for an index that records none. Engine settings (device,
    backend, precision, threads, batch size) are always ``given``'s."""
    if given.given:
        return given
    if recorded and recorded.get("source"):
        src = recorded["source"]
        kind = src.get("kind")
        if kind == "official":
            chosen = given.replace(name=recorded.get("name"), tag=src.get("tag"))
        elif kind == "checkpoint":
            chosen = given.replace(name=recorded.get("name"), weights=_existing(src))
        else:
            chosen = given.replace(model_dir=_existing(src))
        log(f"using the index's own model: {describe(recorded)}")
        return chosen
    if default is None:
        raise UsageError("this index records no model, and no model was given",
                         hint="pass the model the index was built with (--model-dir DIR, --weights FILE or --model NAME)")
    log(f"this index records no model: using the default model {default} (pass the index's model if it differs)")
    return given.replace(name=default)


def _existing(src: Dict[str, Any]) -> str:
    """The recorded location that still exists (resolved first), or a one-line error naming both."""
    for key in ("resolved", "given"):
        path = src.get(key)
        if path and os.path.exists(path):
            return str(path)
    raise UsageError(f"the index's model {src.get('given') or src.get('resolved')} no longer exists",
                     hint="pass its current location with --model-dir (or --weights)")


def notes_for(recorded: Optional[Dict[str, Any]]) -> List[str]:
    """What to tell a user about the index's record (PaddleX indexes: the model is unchecked)."""
    return [] if recorded else [UNCHECKED_NOTE]
