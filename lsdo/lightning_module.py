"""Lightning orchestration of LSDO training and evaluation.

The module holds a plain config (a dict, saved as the checkpoint's hyper-parameters) and
rebuilds the model from it, so a checkpoint alone is enough to evaluate. The maths lives in
:mod:`lsdo.model` and :mod:`lsdo.loss`; this file only wires them:
encode_text / encode_video -> similarity -> symmetric InfoNCE, and retrieval metrics at the end
of validation and test.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from lsdo.callbacks import WINDOW_METRIC
from lsdo.errors import ConfigError
from lsdo.loss import symmetric_infonce
from lsdo.model import TextFeatures, build_model
from lsdo.model.video_lsdo import SingleLSDO
from lsdo.retrieval import canonical_mode, dual_softmax, fast_similarity, similarity_matrix
from lsdo.retrieval.metrics import t2v_metrics, v2t_metrics

log = logging.getLogger(__name__)


class MetricWindow:
    """Mean of the last ``size`` values of a metric (fewer at the start), as the released code's model selection.

    The release validates 10 times per epoch, keeps the last 5 values of each metric and saves the
    checkpoint whose validation has the best mean text-to-video R@1 over those (fewer at the start).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ConfigError(f"checkpoint.monitor_window: expected an integer >= 1, got {size}")
        self.size = int(size)
        self.values: list[float] = []

    def add(self, value: float) -> float:
        """Append one validation's value; returns the mean over the window."""
        self.values = [*self.values, float(value)][-self.size :]
        return sum(self.values) / len(self.values)


def cosine_with_warmup(step: int, total: int, warmup: int, from_zero: bool = False) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``.

    The warm-up multiplier of step s (0-based) is (s + 1) / warmup, or with ``from_zero``
    (``optim.warmup_from_zero``, the released code's HuggingFace-style schedule) s / warmup: 0 at the
    first step, so the first optimiser step does not move the weights.
    """
    if step < warmup:
        return (step if from_zero else step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class LSDOLitModule(L.LightningModule):
    """Trains :class:`lsdo.model.LSDOModel` with symmetric InfoNCE; evaluates full retrieval."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg})
        self.cfg = OmegaConf.create(cfg)
        self.model = build_model(self.cfg)
        self._eval: dict[str, list] = {}
        self.results: dict[str, dict[str, float]] = {}
        self.eval_outputs: dict[str, dict[str, torch.Tensor]] = {}  # last [T, V] scores per split (for plots)
        # checkpoint.monitor_window (configs/train.yaml); 1 for configs saved before the key existed.
        self.r1_window = MetricWindow(int(OmegaConf.select(self.cfg, "checkpoint.monitor_window", default=1)))

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        if self.model.needs_bank_init():
            dm = self.trainer.datamodule
            m = int(self.cfg.variant.m)
            frames = dm.bank_videos(m).to(self.device)
            self.model.init_shared_bank(frames)
            log.info("shared bank initialised from %d training videos (variant.init=feature)", m)

    def on_train_epoch_start(self) -> None:
        # Dropout and any other torch randomness depend only on (seed, epoch): exact resume.
        torch.manual_seed(int(self.cfg.seed) * 1000 + self.current_epoch)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size <= 1:
            return x
        return self.all_gather(x, sync_grads=True).flatten(0, 1)  # [W, B, ...] -> [W*B, ...]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        tokens = self.model.tokenize(batch["captions"]).to(self.device)
        text = self.model.encode_text(tokens)
        video = self.model.encode_video(batch["frames"])  # [B, n, d]
        # DDP: negatives span the global batch (gathered with gradients).
        text = TextFeatures(self._gather(text.query), self._gather(text.target), self._gather(text.eos))
        video = self._gather(video)
        sims = self.model.similarity(text, video)  # [B, B]
        loss = symmetric_infonce(
            sims.float(), self.model.logit_scale.float(), average=self.model.loss_averages_directions
        )
        bs = sims.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/lambda", self.model.logit_scale.detach().exp(), batch_size=bs)
        lsdo = self.model.video_lsdo
        if isinstance(lsdo, SingleLSDO):
            self.log("train/theta", lsdo.theta.detach(), batch_size=bs)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.model.clamp_logit_scale()  # lambda <= 100 after every optimiser step

    def configure_optimizers(self):
        o = self.cfg.optim
        clip_params, new_params = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (clip_params if name.startswith("encoder.") else new_params).append(p)
        wd = float(o.weight_decay)
        groups = []
        for params, lr in ((clip_params, float(o.clip_lr)), (new_params, float(o.lr))):
            if bool(o.get("exclude_1d_from_decay", False)):
                # open_clip's from-scratch recipe: no decay on biases, norm gains, logit scale.
                decay, plain = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
                groups += [
                    {"params": decay, "lr": lr, "weight_decay": wd},
                    {"params": plain, "lr": lr, "weight_decay": 0.0},
                ]
            else:  # the paper / X-Pool: AdamW decay on every parameter
                groups.append({"params": params, "lr": lr, "weight_decay": wd})
        opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=wd, eps=float(o.eps))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(float(o.warmup_ratio) * total)
        from_zero = bool(o.warmup_from_zero)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, total, warmup, from_zero))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, Any]) -> None:
        tokens = self.model.tokenize(batch["captions"]).to(self.device)
        store = self._eval.setdefault("parts", [])
        store.append(
            (
                self.model.encode_text(tokens).detach(),
                self.model.encode_video(batch["frames"]).detach(),
                batch["text_to_video"].to(self.device),
            )
        )

    @torch.no_grad()
    def retrieval_scores(self, text: TextFeatures, video: torch.Tensor) -> torch.Tensor:
        """[T, V] scores as ``cfg.inference`` says: full protocol or prefilter + re-ranking, optional DSL.

        ``inference.mode=full`` scores every pair exactly (lsdo.retrieval.similarity_matrix);
        ``prefilter`` (earlier name ``fast``) re-ranks the ``prefilter_k`` mean-pool candidates of each
        text (paper IV-B.3).
        ``inference.dsl=true`` applies dual softmax (transductive; labelled in every output).
        """
        inf = self.cfg.get("inference") or {}
        chunk = int(inf["chunk_size"])
        mode = canonical_mode(str(inf["mode"]))
        if mode == "full":
            sims = similarity_matrix(self.model, text, video, chunk_size=chunk, method=str(inf["method"]))
        elif mode == "prefilter":
            sims = fast_similarity(self.model, text, video, prefilter_k=int(inf["prefilter_k"]), chunk_size=chunk)
        else:
            raise ConfigError(f"inference.mode: expected full | prefilter (or fast = prefilter), got '{mode}'")
        sims = sims.float()
        if bool(inf["dsl"]):
            sims = dual_softmax(sims, float(inf["dsl_temperature"]))
        return sims

    def _eval_end(self, prefix: str) -> dict[str, float]:
        parts = self._eval.pop("parts", [])
        if not parts:
            return {}
        t2v, n = [], 0
        for _, video, idx in parts:
            t2v.append(idx + n)
            n += video.shape[0]
        text = TextFeatures.cat([p[0] for p in parts])
        video = torch.cat([p[1] for p in parts])  # [V, n, d]
        t2v_idx = torch.cat(t2v)
        sims = self.retrieval_scores(text, video)  # [T, V]
        self.eval_outputs[prefix] = {"sims": sims.cpu(), "text_to_video": t2v_idx.cpu()}
        metrics = {f"t2v/{k}": v for k, v in t2v_metrics(sims, t2v_idx).items()}
        metrics.update({f"v2t/{k}": v for k, v in v2t_metrics(sims, t2v_idx).items()})
        metrics["num_texts"], metrics["num_videos"] = float(sims.shape[0]), float(sims.shape[1])
        for k, v in metrics.items():
            self.log(f"{prefix}/{k}", v, prog_bar=k == "t2v/R1", sync_dist=False, rank_zero_only=True)
        self.results[prefix] = metrics
        return metrics

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self._eval_end("val")
        if metrics and self.r1_window.size > 1 and not self.trainer.sanity_checking:
            # checkpoint.monitor_window > 1: the best checkpoint follows this mean (lsdo.callbacks.WINDOW_METRIC)
            metrics["t2v/R1_window"] = self.r1_window.add(metrics["t2v/R1"])
            self.log(WINDOW_METRIC, metrics["t2v/R1_window"], prog_bar=True, sync_dist=False, rank_zero_only=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["r1_window"] = list(self.r1_window.values)  # a resumed run continues the same window

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.r1_window.values = [float(v) for v in checkpoint.get("r1_window", [])][-self.r1_window.size :]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
