"""The one place retrieval embeds images: the pipeline's in-memory sink, per chunk of inputs."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common.progress import ProgressFn, null_progress


def embed_sources(model: Any, sources: Sequence[Any], batch_size: Optional[int] = None,
                  progress: ProgressFn = null_progress) -> Tuple[List[int], np.ndarray, List[Tuple[str, str]]]:
    """Embed ``sources`` (paths, URLs, arrays); return the rows that worked, their features (float32,
    same order) and ``(input path, reason)`` for each that failed."""
    from imgfeat_cli.pipeline.embedder import embed_to_memory

    sink = embed_to_memory(model, list(sources), batch_size=batch_size, progress=progress)
    row_of = {str(s): i for i, s in enumerate(sources)}
    rows = [row_of[str(p)] for p in sink.paths]
    return rows, np.asarray(sink.features, dtype=np.float32), [(str(p), str(why)) for p, why in sink.errors]
