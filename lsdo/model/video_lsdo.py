"""Video-level LSDO features f_s (paper Section III-B, Eq. 4-7, Fig. 3).

All modules map frame [CLS] features f_v [B, n, d] to f_s [B or 1, r, d]:

* ``SharedLSDO``  (Eq. 4): a bank of m video features shared by every video -> [1, m, d].
* ``AverageLSDO`` (Eq. 5): f_s = mean_i Norm(FC(f_v^i)) -> [B, 1, d].
* ``SingleLSDO``  (Eq. 6-7): f_sub = Norm(FC(f_v^k)) - f_s^average for the selected frame k,
  entries above the threshold theta set to 0 -> [B, 1, d].

``variant=regions`` (:class:`lsdo.model.region_lsdo.RegionLSDO`, also built by
:func:`build_video_lsdo`) is the exception: it needs the frames, not f_v, and maps
frames [B, n, 3, H, W] to f_s [B, n*k, d] plus a key mask [B, n*k].
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lsdo.errors import ConfigError, LSDOUserError, read_json_file
from lsdo.model.layers import identity_linear


def read_bank_file(path: str | Path, dim: int | None = None) -> tuple[list[str], torch.Tensor]:
    """Read a shared-bank JSON file ``{"videos": [m ids], "features": [m x d floats]}``."""
    p = Path(path)
    data = read_json_file(p, "variant.bank_path")
    if not isinstance(data, dict) or "features" not in data:
        raise LSDOUserError(f"variant.bank_path: {p} has no 'features' key")
    feats = torch.tensor(data["features"], dtype=torch.float32)
    if feats.ndim != 2 or (dim is not None and feats.shape[1] != dim):
        raise LSDOUserError(f"variant.bank_path: {p} 'features' has shape {tuple(feats.shape)}, expected [m, {dim}]")
    videos = [str(v) for v in data.get("videos", [])]
    if videos and len(videos) != feats.shape[0]:
        raise LSDOUserError(f"variant.bank_path: {p} lists {len(videos)} 'videos' but {feats.shape[0]} feature rows")
    return videos, feats


def write_bank_file(path: str | Path, videos: list[str], features: torch.Tensor) -> None:
    """Write a shared bank in the JSON format read by :func:`read_bank_file`."""
    Path(path).write_text(json.dumps({"videos": list(videos), "features": features.float().tolist()}))


class SharedLSDO(nn.Module):
    """Eq. 4: f_s^shared = Concat(phi(v_1), ..., phi(v_m)) in R^{m x d}, a learnable bank.

    ``init`` (Table X): ``feature`` (features of m training videos of distinct categories,
    encoded when training starts, see ``LSDOModel.init_shared_bank``), ``file`` (read from
    ``bank_path``), ``zero`` (zeros), ``unique`` (one-hot rows). ``trainable=False`` keeps it a
    constant buffer (the released code's behaviour).
    """

    def __init__(
        self, dim: int, m: int = 20, init: str = "feature", bank_path: str | None = None, trainable: bool = True
    ) -> None:
        super().__init__()
        if init not in ("feature", "file", "zero", "unique"):
            raise ConfigError(f"variant.init: expected feature | file | zero | unique, got '{init}'")
        bank = torch.zeros(m, dim)
        initialised = True
        if init == "unique":
            if m > dim:
                raise ConfigError(f"variant.init=unique needs variant.m <= {dim}, got {m}")
            bank = torch.eye(m, dim)
        elif init == "file":
            if not bank_path:
                raise ConfigError("variant.init=file needs variant.bank_path")
            _, feats = read_bank_file(bank_path, dim)
            if feats.shape[0] != m:
                raise ConfigError(f"variant.m={m} but {bank_path} holds {feats.shape[0]} features")
            bank = feats
        elif init == "feature":
            initialised = False  # filled from training videos by LSDOModel.init_shared_bank
        self.init = init
        if trainable:
            self.bank = nn.Parameter(bank)
        else:
            self.register_buffer("bank", bank)
        # Saved in checkpoints so a resumed run never re-initialises a trained bank.
        self.register_buffer("initialised", torch.tensor(initialised))

    @torch.no_grad()
    def set_bank(self, features: torch.Tensor) -> None:
        """Overwrite the bank with [m, d] video features and mark it initialised."""
        if features.shape != self.bank.shape:
            raise ValueError(f"bank features must be {tuple(self.bank.shape)}, got {tuple(features.shape)}")
        self.bank.copy_(features.to(self.bank))
        self.initialised.fill_(True)

    def forward(self, f_v: torch.Tensor) -> torch.Tensor:
        """f_v [B, n, d] (unused: the bank is video-independent) -> f_s [1, m, d]."""
        return self.bank.unsqueeze(0).to(f_v.dtype)  # [1, m, d]


class AverageLSDO(nn.Module):
    """Eq. 5: f_s^average = (1/n) sum_i Norm(FC(f_v^i)); FC identity-initialised, Norm = LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = identity_linear(dim)
        self.norm = nn.LayerNorm(dim)

    def per_frame(self, f_v: torch.Tensor) -> torch.Tensor:
        """Norm(FC(f_v^i)) for every frame: [B, n, d] -> [B, n, d]."""
        return self.norm(self.fc(f_v))

    def forward(self, f_v: torch.Tensor) -> torch.Tensor:
        """f_v [B, n, d] -> f_s [B, 1, d]."""
        return self.per_frame(f_v).mean(dim=1, keepdim=True)  # [B, 1, d]


class SingleLSDO(nn.Module):
    """Eq. 6-7: the selected frame minus the average, entries above theta set to 0.

        f_sub = Norm(FC(f_v^k)) - f_s^average                    (Eq. 6)
        f_s^single(j) = f_sub(j) if f_sub(j) <= theta else 0     (Eq. 7)

    The forward pass is the hard threshold of Eq. 7 exactly. With ``learnable_threshold`` theta
    receives a gradient through a straight-through estimator: the hard 0/1 mask is replaced in
    the backward pass by the derivative of sigmoid((theta - f_sub) / tau) (``ste_temperature``
    tau), i.e. mask = hard + (soft - soft.detach()), whose value is exactly the hard mask.

    ``frame_index``: which of the n sampled frames is f_v^k. With segment sampling (one frame per
    equal segment, random inside it in training, its middle at test) sampled frame k (1-based) is
    "a frame of the k-th of n segments". The paper (IV-B.1) takes the 6th of 12 segments for
    MSR-VTT, MSVD and LSMDC (n = 12) and the 32nd of 64 for DiDeMo (n = 64): the segment at
    ``select_frame / num_segments`` of the video (6/12 = 32/64), so one setting
    (``select_frame=6``, ``num_segments=12``) gives both. The released code instead indexes its
    ``select_frame=6`` 0-based (its 7th of 12 frames; the release's ``single`` does not run).
    """

    def __init__(
        self,
        dim: int,
        theta: float = 0.9,
        learnable_threshold: bool = True,
        select_frame: int = 6,
        num_segments: int = 12,
        ste_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if not 1 <= select_frame <= num_segments:
            raise ConfigError(f"variant.select_frame must be in 1..{num_segments}, got {select_frame}")
        self.average = AverageLSDO(dim)
        self.select_frame = select_frame
        self.num_segments = num_segments
        self.tau = ste_temperature
        theta_t = torch.tensor(float(theta))
        if learnable_threshold:
            self.theta = nn.Parameter(theta_t)
        else:
            self.register_buffer("theta", theta_t)

    def frame_index(self, n: int) -> int:
        """0-based index of f_v^k among n segment-sampled frames.

        Frame k (1-based) = ceil(n * select_frame / num_segments), the segment at the fraction
        select_frame / num_segments of the video; returned 0-based, k - 1. With 6 of 12:
        n = 12 -> 5 (the 6th frame), n = 64 -> 31 (the 32nd, DiDeMo), n = 8 -> 3 (the 4th).
        """
        k = -(-n * self.select_frame // self.num_segments)  # exact integer ceil
        return min(n, max(1, k)) - 1

    def threshold(self, f_sub: torch.Tensor) -> torch.Tensor:
        """Eq. 7 with a straight-through gradient for theta (see class docstring)."""
        theta = self.theta.to(f_sub.dtype)
        hard = (f_sub <= theta).to(f_sub.dtype)
        if not (self.training and isinstance(self.theta, nn.Parameter) and self.theta.requires_grad):
            return f_sub * hard
        soft = torch.sigmoid((theta - f_sub) / self.tau)
        return f_sub * (hard + (soft - soft.detach()))  # the bracket is exactly 0

    def forward(self, f_v: torch.Tensor) -> torch.Tensor:
        """f_v [B, n, d] -> f_s [B, 1, d]."""
        per_frame = self.average.per_frame(f_v)  # [B, n, d]
        avg = per_frame.mean(dim=1, keepdim=True)  # [B, 1, d]
        k = self.frame_index(f_v.shape[1])
        f_sub = per_frame[:, k : k + 1] - avg  # [B, 1, d]
        return self.threshold(f_sub)


def build_video_lsdo(variant, dim: int, trainable_bank: bool = True) -> nn.Module | None:
    """The video-level LSDO module of ``variant.name`` (None for ``baseline``; RegionLSDO for ``regions``)."""
    name = variant.name
    if name == "baseline":
        return None
    if name == "shared":
        return SharedLSDO(
            dim, m=int(variant.m), init=str(variant.init), bank_path=variant.bank_path, trainable=trainable_bank
        )
    if name == "average":
        return AverageLSDO(dim)
    if name == "regions":
        from lsdo.model.region_lsdo import build_region_lsdo

        return build_region_lsdo(variant, dim)
    if name == "single":
        return SingleLSDO(
            dim,
            theta=float(variant.theta),
            learnable_threshold=bool(variant.learnable_threshold),
            select_frame=int(variant.select_frame),
            num_segments=int(variant.num_segments),
            ste_temperature=float(variant.ste_temperature),
        )
    raise ConfigError(f"variant.name: expected baseline | shared | average | single | regions, got '{name}'")
