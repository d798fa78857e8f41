"""Non-finite values (NaN / inf) in an index: refused when stored, found by verify, named when searched.

Features that come out NaN / inf (a checkpoint with NaN weights, a float16 overflow) are refused
by ``VideoIndex.build`` / ``add`` (:func:`refuse_nonfinite` raises :class:`NonFiniteFeaturesError`
naming the first video and telling an overflow from a broken model); ``verify_index`` lists the
videos whose stored rows are not finite (:func:`nonfinite_rows`); a search that meets a NaN or
+inf score anyway (a damaged or older index) stops with a one-line LSDOUserError naming the video
(:func:`refuse_nan_scores`) instead of ranking it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lsdo.errors import LSDOUserError
from lsdo.names import printable
from lsdo.retrieval.index.format import FrameStore

NanCheck = Callable[[torch.Tensor, torch.Tensor], None]  # (scores [T, c], their videos [T, c] or [c]) -> raises


class NonFiniteFeaturesError(LSDOUserError, ValueError):
    """Features (or region embeddings) holding NaN or inf: refused when building or growing an index."""


def nonfinite_rows(tensor: FrameStore, chunk: int = 4096) -> list[int]:
    """Indices of the rows (videos) of ``tensor`` [V, ...] holding NaN or inf, read ``chunk`` rows at a time."""
    bad: list[int] = []
    for start in range(0, tensor.shape[0], chunk):
        part = tensor[start : start + chunk]
        if part.dtype == torch.bool:
            continue
        ok = torch.isfinite(part).flatten(1).all(dim=1)  # [c, ...] -> [c, rest] -> [c]
        bad += (torch.nonzero(~ok).flatten() + start).tolist()
    return bad


def refuse_nonfinite(
    tensors: dict[str, torch.Tensor], ids: Sequence[str], source: dict[str, torch.Tensor] | None = None
) -> None:
    """NonFiniteFeaturesError naming the first video whose stored ``tensors`` hold NaN / inf.

    ``source``: the same tensors before the cast to the storage dtype, to tell a float16 overflow apart.
    """
    for name, tensor in tensors.items():
        bad = nonfinite_rows(tensor)
        if not bad:
            continue
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        what = "features" if name == "features" else f"{name.replace('_', ' ')}"
        before = source.get(name) if source else None
        if before is not None and not nonfinite_rows(before[bad[0] : bad[0] + 1]):
            hint = "values beyond float16's range (65504): store them as float32 (dtype=torch.float32 / fp16=false)"
        else:
            hint = "NaN or inf from the model (a checkpoint with NaN weights?) or its input: check them and rebuild"
        raise NonFiniteFeaturesError(
            f"video '{printable(ids[bad[0]])}'{more} has non-finite {what}; refusing to index it: {hint}"
        )


def refuse_nan_scores(scores: torch.Tensor, videos: torch.Tensor, ids: Sequence[str], source: str | None) -> None:
    """LSDOUserError naming the first video with a NaN / +inf score: scores [T, c], their videos [T, c] or [c].

    ``ids``: the index's ids (``videos`` index them); ``source``: its directory, for the message.
    """
    bad = torch.isnan(scores) | (scores == float("inf"))  # [T, c]
    if not bool(bad.any()):
        return
    found = videos.expand_as(scores)[bad].unique()
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    where = f" {source}" if source else ""
    check = f"lsdo-index verify index={source}" if source else "lsdo-index verify"
    raise LSDOUserError(
        f"index{where}: video '{printable(ids[int(found[0])])}'{more} has non-finite stored values "
        f"(score {scores[bad][0].item()}): the index is damaged or was built without checks; "
        f"check it with {check} and rebuild it"
    )
