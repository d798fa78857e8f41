"""An X-Pool head's maps in order, as data: what the exact fast scorer
(:mod:`lsdo.retrieval.xpool_fast`) needs to know about the head it scores with.

Both heads share LN_in -> single-head attention (q, k, v, softmax over the frames) -> W_out; then

* impl=paper (:class:`PaperXPool`, Eq. 20): z = LN_out(out);
* impl=official (:class:`lsdo.model.official.OfficialXPool`): a = LN2(out),
  z = LN3(a + linear_proj(a)) (the ``residual`` pair (LN2, linear_proj)).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lsdo.model.xpool import XPool


@dataclass(frozen=True)
class XPoolLayout:
    """The modules of an X-Pool head (shared with it, not copied).

    ``norm_in`` normalises the text and the frames; ``q``, ``k``, ``v``, ``out`` are the d x d
    projections and ``scale`` the logit scale 1/sqrt(d); ``residual`` (the LayerNorm and the
    linear map of a = LN(out), a + linear(a)) sits between ``out`` and ``norm_out``, or is None.
    """

    norm_in: nn.LayerNorm
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    out: nn.Linear
    norm_out: nn.LayerNorm
    scale: float
    residual: tuple[nn.LayerNorm, nn.Linear] | None = None


class PaperXPool(XPool):
    """X-Pool of Eq. 16-20 (:class:`lsdo.model.xpool.XPool`, same parameters) with its :class:`XPoolLayout`."""

    def layout(self) -> XPoolLayout:
        """LN_in, q, k, v, W_out, then the output LayerNorm alone."""
        return XPoolLayout(self.norm_in, self.q, self.k, self.v, self.out, self.norm_out, self.scale)
