"""Lightning orchestration of LSDO training and evaluation.

The module holds a plain config (a dict, saved as the checkpoint's hyper-parameters) and
rebuilds the model from it, so a checkpoint alone is enough to evaluate. The maths lives in
:mod:`lsdo.model` and :mod:`lsdo.loss`; this file only wires them:
encode_text / encode_video -> similarity -> symmetric InfoNCE, and retrieval metrics at the end
of validation and test.

Under DDP (docs/distributed.md) one step on W ranks equals one step of one process on the global
batch: the features are gathered with their gradients, every rank computes the loss of the whole
global batch, and DDP's average of the ranks' gradients is then the one-process gradient (each rank
holds W times its samples' share: the gather's backward sums the W ranks' gradients). Evaluation
shards the videos over the ranks (:class:`lsdo.data.batching.ShardSampler`), gathers the features
once, scores and computes the metrics on rank 0 and broadcasts them, so every rank logs the same values.
"""

from __future__ import annotations

import logging
import math
import pickle
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from lsdo.callbacks import WINDOW_METRIC
from lsdo.errors import ConfigError
from lsdo.loss import symmetric_infonce
from lsdo.model import TextFeatures, build_model
from lsdo.model.region_lsdo import RegionLSDO
from lsdo.model.video_lsdo import SingleLSDO
from lsdo.retrieval import canonical_mode, dual_softmax, fast_similarity, similarity_matrix
from lsdo.retrieval.metrics import t2v_metrics, v2t_metrics
from lsdo.retrieval.qbnorm import check_options as check_qb_norm
from lsdo.retrieval.qbnorm import qb_norm

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- distributed helpers
def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward gives each rank the sum over the ranks of the gradients of its slice."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        rank, world = dist_rank_world()
        parts = [torch.empty_like(x) for _ in range(world)]
        torch.distributed.all_gather(parts, x.contiguous())
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)  # SUM: every rank's loss sends a gradient to this rank's rows
        start, end = ctx.rows
        return grad[start:end]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[B, ...] of every rank -> [W*B, ...] in rank order, differentiable (equal B on every rank).

    Its backward sums over the ranks the gradient each rank's loss sends to this rank's rows (as
    ``torch.distributed.nn.functional.all_gather`` does): with the same global loss on every rank, a
    rank's gradient is W times its samples' share, and DDP's average over the W ranks is the gradient
    of the one-process loss (tests/test_ddp.py measures it).
    """
    _, world = dist_rank_world()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate (rank order, no gradient) each rank's [n_r, ...] (n_r may differ); returns it and [n_r].

    Padded to the largest n_r for the collective and trimmed after: works on gloo and nccl alike.
    """
    _, world = dist_rank_world()
    if world == 1:
        return x, [int(x.shape[0])]
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    torch.distributed.all_gather(sizes, n)
    counts = [int(c.item()) for c in sizes]
    buf = x.new_zeros((max(counts), *x.shape[1:]))
    buf[: x.shape[0]] = x
    out = [torch.empty_like(buf) for _ in range(world)]
    torch.distributed.all_gather(out, buf.contiguous())
    return torch.cat([o[:c] for o, c in zip(out, counts, strict=True)]), counts


def broadcast_from_zero(obj: Any, device: torch.device) -> Any:
    """Rank 0's picklable ``obj`` on every rank."""
    _, world = dist_rank_world()
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0, device=device)
    return box[0]


def _picklable(obj: Any) -> bool:
    try:
        pickle.loads(pickle.dumps(obj))
        return True
    except Exception:
        return False


def first_of_each_video(
    text: TextFeatures, video: torch.Tensor, t2v: torch.Tensor, video_index: torch.Tensor
) -> tuple[TextFeatures, torch.Tensor, torch.Tensor]:
    """Videos in dataset order (``video_index``), each once; every text follows its video.

    A video present twice (a padding sampler repeats items to even out the ranks) keeps its first
    copy, and the captions of the other copies are dropped; the texts come out grouped by video in
    their original order, which is the layout of one process reading the split in order.
    """
    v = video_index.shape[0]
    pos = torch.arange(v, device=video_index.device)
    perm = torch.argsort(video_index * v + pos)  # by index, then position: the first copy first
    idx = video_index[perm]
    first = torch.ones_like(idx, dtype=torch.bool)
    first[1:] = idx[1:] != idx[:-1]
    kept = perm[first]  # positions of the first copies, in dataset order
    new_id = torch.full((v,), -1, dtype=torch.long, device=video_index.device)
    new_id[kept] = torch.arange(kept.shape[0], device=video_index.device)
    owner = new_id[t2v]  # [T]: the text's video in the new order, -1 for a dropped copy
    texts = torch.nonzero(owner >= 0).flatten()
    order = texts[torch.sort(owner[texts], stable=True).indices]
    return text[order], video[kept], owner[order]


def compile_model(model: torch.nn.Module, **options: Any) -> list[str]:
    """``trainer.compile=true``: ``torch.compile`` the CLIP towers and the heads in place; returns their names.

    ``nn.Module.compile`` keeps the modules (and the state-dict keys, so checkpoints are unchanged) and
    compiles their forward: the image tower ``encoder.clip.visual``, the text transformer
    ``encoder.clip.transformer`` and each head after the encoder (X-Pool, the LSDO blocks, the frame
    projection). ``variant=regions``' region finder (data-dependent shapes) stays eager; the image tower it
    calls is compiled. ``options`` go to ``torch.compile`` (``backend=...``).
    """
    names = []
    clip = model.encoder.clip
    for name, module in (("encoder.clip.visual", clip.visual), ("encoder.clip.transformer", clip.transformer)):
        module.compile(**options)
        names.append(name)
    for name, module in model.named_children():
        if name == "encoder" or module is None or isinstance(module, RegionLSDO):
            continue
        module.compile(**options)
        names.append(name)
    return names


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

    @staticmethod
    def _gather_text(text: TextFeatures) -> TextFeatures:
        query = gather_with_grad(text.query)
        target = query if text.target is text.query else gather_with_grad(text.target)  # impl=paper: one tensor
        eos = query if text.eos is text.query else gather_with_grad(text.eos)
        return TextFeatures(query, target, eos)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        tokens = self.model.tokenize(batch["captions"]).to(self.device)
        text = self.model.encode_text(tokens)
        video = self.model.encode_video(batch["frames"])  # [B, n, d]
        # DDP: negatives span the global batch (gathered with gradients); every rank computes the loss of
        # the whole global batch, and DDP's gradient average is the one-process gradient (gather_with_grad).
        text = self._gather_text(text)
        video = gather_with_grad(video)
        sims = self.model.similarity(text, video)  # [W*B, W*B]
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
        index = batch.get("video_index")  # the videos' dataset indices (lsdo.data.batching.collate_eval)
        store.append(
            (
                self.model.encode_text(tokens).detach().to(torch.float32),  # fp32 features: bf16 autocast
                self.model.encode_video(batch["frames"]).detach().float(),  # steps score in full precision
                batch["text_to_video"].to(self.device),
                None if index is None else index.to(self.device),
            )
        )

    @torch.no_grad()
    def retrieval_scores(self, text: TextFeatures, video: torch.Tensor) -> torch.Tensor:
        """[T, V] scores as ``cfg.inference`` says: full protocol or prefilter + re-ranking, optional DSL.

        ``inference.mode=full`` scores every pair exactly (lsdo.retrieval.similarity_matrix);
        ``prefilter`` (earlier name ``fast``) re-ranks the ``prefilter_k`` mean-pool candidates of each
        text (paper IV-B.3).
        ``inference.dsl=true`` applies dual softmax (transductive; labelled in every output).
        ``inference.qb_norm=true`` applies QB-Norm's dynamic inverted softmax with the test queries as
        the bank (``qb_norm_beta``, ``qb_norm_k``; lsdo.retrieval.qbnorm; transductive, labelled in
        every output); refused together with ``dsl``.
        """
        inf = self.cfg.get("inference") or {}
        check_qb_norm(inf)
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
        if bool(inf.get("qb_norm", False)):  # bank: the test queries (qb_norm_bank=test, checked above)
            sims = qb_norm(sims, sims, beta=float(inf["qb_norm_beta"]), k=int(inf["qb_norm_k"]))
        return sims

    def _eval_features(self) -> tuple[TextFeatures, torch.Tensor, torch.Tensor] | None:
        """Every rank's stored texts, videos and text -> video map, gathered (None when nothing was evaluated).

        One process: the batches in order. W ranks: each rank's batches, then the ranks in order (rank r
        reads the r-th contiguous block of the split, lsdo.data.batching.ShardSampler), each caption's video
        index shifted by the videos of the ranks before it; with ``video_index`` in the batches the videos
        are then put in dataset order, each once (:func:`first_of_each_video`).
        """
        parts = self._eval.pop("parts", [])
        _, world = dist_rank_world()
        if world > 1:  # every rank must take the same branch: the collectives below need all of them
            counts, _ = gather_rows(torch.tensor([len(parts)], device=self.device))
            if not bool((counts > 0).any()):
                return None
            if not bool((counts > 0).all()):
                raise RuntimeError(
                    f"evaluation batches per rank: {counts.tolist()}; every rank needs at least one "
                    "(fewer videos than ranks, or limit_val_batches / limit_test_batches too small)"
                )
        elif not parts:
            return None
        t2v, n = [], 0
        for _, video, idx, _ in parts:
            t2v.append(idx + n)
            n += video.shape[0]
        text = TextFeatures.cat([p[0] for p in parts])
        video = torch.cat([p[1] for p in parts])  # [V, n, d]
        t2v_idx = torch.cat(t2v)
        with_index = parts[0][3] is not None
        video_index = torch.cat([p[3] for p in parts]) if with_index else None
        if world > 1:
            query, _ = gather_rows(text.query)
            target = query if text.target is text.query else gather_rows(text.target)[0]
            eos = query if text.eos is text.query else gather_rows(text.eos)[0]
            text = TextFeatures(query, target, eos)
            video, videos_per_rank = gather_rows(video)
            t2v_all, texts_per_rank = gather_rows(t2v_idx)
            shift = torch.repeat_interleave(
                torch.tensor([0, *videos_per_rank[:-1]], device=t2v_all.device).cumsum(0),
                torch.tensor(texts_per_rank, device=t2v_all.device),
            )
            t2v_idx = t2v_all + shift
            if video_index is not None:
                video_index, _ = gather_rows(video_index)
        if video_index is not None:
            text, video, t2v_idx = first_of_each_video(text, video, t2v_idx, video_index)
        return text, video, t2v_idx

    def _score(self, prefix: str, text: TextFeatures, video: torch.Tensor, t2v_idx: torch.Tensor) -> dict[str, float]:
        sims = self.retrieval_scores(text, video)  # [T, V]
        self.eval_outputs[prefix] = {"sims": sims.cpu(), "text_to_video": t2v_idx.cpu()}
        metrics = {f"t2v/{k}": v for k, v in t2v_metrics(sims, t2v_idx).items()}
        metrics.update({f"v2t/{k}": v for k, v in v2t_metrics(sims, t2v_idx).items()})
        metrics["num_texts"], metrics["num_videos"] = float(sims.shape[0]), float(sims.shape[1])
        return metrics

    def _eval_end(self, prefix: str) -> dict[str, float]:
        gathered = self._eval_features()
        if gathered is None:
            return {}
        rank, world = dist_rank_world()
        if world == 1:
            metrics = self._score(prefix, *gathered)
        else:  # scored once, on rank 0; its metrics (or its error) reach every rank
            outcome: tuple[dict[str, float] | None, BaseException | None] = (None, None)
            if rank == 0:
                try:
                    outcome = (self._score(prefix, *gathered), None)
                except Exception as exc:  # every rank raises it, none waits for rank 0 forever
                    outcome = (None, exc if _picklable(exc) else RuntimeError(f"rank 0: {exc!r}"))
            metrics, error = broadcast_from_zero(outcome, self.device)
            if error is not None:
                raise error
        for k, v in metrics.items():
            # Every rank logs rank 0's value: the checkpoint callback sees the same number on each; the
            # max over identical values is that value exactly (a mean over ranks could round it).
            self.log(f"{prefix}/{k}", v, prog_bar=k == "t2v/R1", sync_dist=True, reduce_fx="max")
        self.results[prefix] = metrics
        return metrics

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self._eval_end("val")
        if metrics and self.r1_window.size > 1 and not self.trainer.sanity_checking:
            # checkpoint.monitor_window > 1: the best checkpoint follows this mean (lsdo.callbacks.WINDOW_METRIC)
            metrics["t2v/R1_window"] = self.r1_window.add(metrics["t2v/R1"])
            self.log(WINDOW_METRIC, metrics["t2v/R1_window"], prog_bar=True, sync_dist=True, reduce_fx="max")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["r1_window"] = list(self.r1_window.values)  # a resumed run continues the same window

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.r1_window.values = [float(v) for v in checkpoint.get("r1_window", [])][-self.r1_window.size :]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")
