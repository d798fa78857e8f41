"""Training-step throughput, peak memory and achieved TFLOP/s: fp32 / bf16, activation checkpointing, torch.compile.

    python bench/train_step.py                          # tiny model, small shapes: about a minute on 2 CPU cores
    python bench/train_step.py model=clip_b32           # ViT-B/32 at 32 x 12 and 6 x 64 on a GPU (bench/gpu.sh)
    python bench/train_step.py variants=baseline,shared,average,single precisions=fp32 grad_checkpointing=false

One training step is forward + backward + gradient clipping + AdamW step of the LSDO model (random-init
weights: the cost does not depend on them) on random frames and captions. For every variant, shape
(``BxN``: B videos of N frames) and mode (precision x ``grad_checkpointing`` x ``compile``) it reports the
median step time over ``steps`` steps after ``warmup`` steps (the first steps of a compiled mode include the
compilation), clips/s (B / step time), the peak memory (CUDA: ``max_memory_allocated``, weights included;
CPU: the peak RSS of the steps above the RSS before them, i.e. gradients, AdamW state and activations, the
peak reset per row through /proc/self/clear_refs; elsewhere the process's all-time peak RSS), and the
achieved TFLOP/s: the model FLOPs of one step (forward + backward, counted once per variant and shape with
``torch.utils.flop_counter.FlopCounterMode`` on an eager fp32 step, attention through SDPA's math kernel so
every matmul is seen; recomputation by checkpointing is not counted, as in MFU) over the step time, against
the device's dense peak for that precision from a table of known GPUs (else "unknown").

* ``precision=bf16``: the step under ``torch.autocast(dtype=torch.bfloat16)``, float32 parameters and
  optimiser state: what ``precision: bf16-mixed`` (configs/trainer/gpu.yaml) does in Lightning.
* ``grad_checkpointing=true``: ``model.grad_checkpointing=true`` (open_clip recomputes the towers' blocks).
* ``compile=true``: the loss function (the model's forward and the InfoNCE loss) through ``torch.compile``,
  backward by AOTAutograd; the optimiser step stays eager.

A mode that fails (out of memory, a compile error) prints its row with the error and the others go on.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lsdo.config import compose
from lsdo.errors import LSDOUserError
from lsdo.loss import symmetric_infonce
from lsdo.model import LSDOModel, build_model
from lsdo.options import option

# Dense (no sparsity) peak TFLOP/s by precision, from the vendors' data sheets; the first key found in
# torch.cuda.get_device_name() as whole words wins (L4 is not L40). fp32 is the plain (non-tensor-core) rate:
# torch's default matmul precision ("highest") does not use TF32.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.0, "fp32": 67.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}),
    ("H100 NVL", {"bf16": 835.0, "fp32": 60.0}),
    ("H100", {"bf16": 989.0, "fp32": 67.0}),  # SXM (get_device_name: "NVIDIA H100 80GB HBM3")
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp32": 30.3}),
)
PRECISIONS = ("fp32", "bf16")
GPU_SHAPES = ["32x12", "6x64"]  # the paper's training batches: MSR-VTT-like 32 x 12, DiDeMo-like 6 x 64 frames
CPU_SHAPES = ["8x12", "2x64"]  # the same frame counts per video at a size 2 CPU cores time in about a minute


@dataclass
class TrainStepArgs:
    model: str = option("model preset", "tiny", choices=("tiny", "clip_b32"))
    shapes: list[str] = option("BxN shapes (B videos of N frames); empty: 32x12,6x64 on CUDA, 8x12,2x64 on CPU", [])
    batch: int | None = option(
        "videos per step (the earlier key: with frames, one shape BATCHxFRAMES)", None, minimum=1
    )
    frames: int | None = option("frames per video (the earlier key; batch defaults to 32 then)", None, minimum=1)
    steps: int = option("measured steps", 5, minimum=1)
    warmup: int = option("steps before the measured ones", 2, minimum=0)
    variants: list[str] = option("variants to time", ["average"])
    precisions: list[str] = option("fp32 and/or bf16 (autocast, fp32 parameters)", ["fp32", "bf16"])
    grad_checkpointing: list[bool] = option("activation checkpointing off and/or on", [False, True])
    compile: list[bool] = option("torch.compile off and/or on; empty: false,true on CUDA, false on CPU", [])
    fp32: bool = option("fp32 only (the earlier key: same as precisions=fp32)", False)


@dataclass(frozen=True)
class Mode:
    precision: str
    checkpointing: bool
    compiled: bool


def parse_shape(text: str) -> tuple[int, int]:
    b, sep, n = text.lower().partition("x")
    if not (sep and b.strip().isdigit() and n.strip().isdigit()) or int(b) < 1 or int(n) < 1:
        raise LSDOUserError(f"shapes: expected BxN with positive integers (e.g. 32x12), got {text!r}")
    return int(b), int(n)


def plan(args: TrainStepArgs, device: torch.device) -> tuple[list[tuple[int, int]], list[Mode]]:
    """The shapes and modes ``args`` asks for on ``device``."""
    if args.batch is not None or args.frames is not None:
        shapes = [(args.batch or 32, args.frames or 12)]
    else:
        shapes = [parse_shape(s) for s in (args.shapes or (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES))]
    precisions = ["fp32"] if args.fp32 else [p.strip().lower() for p in args.precisions]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise LSDOUserError(f"precisions: expected fp32 and/or bf16, got {','.join(args.precisions)!r}")
    compiled = args.compile or ([False, True] if device.type == "cuda" else [False])
    modes = [Mode(p, c, k) for k in compiled for c in args.grad_checkpointing for p in precisions]
    return shapes, modes


def peak_tflops(device: torch.device) -> tuple[str, dict[str, float] | None]:
    """(device description, {precision: dense peak TFLOP/s} or None when the device is not in the table)."""
    if device.type != "cuda":
        return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads", None
    name = torch.cuda.get_device_name(device)
    return name, next((peaks for key, peaks in PEAK_TFLOPS if re.search(rf"\b{re.escape(key)}\b", name, re.I)), None)


# ------------------------------------------------------------------ memory
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _libc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap pages back, so the next row starts low


def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MiB; None off Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def reset_peak(device: torch.device) -> float | None:
    """Start a row's peak-memory window: CUDA 0.0; CPU the RSS now (None: only the all-time peak RSS is known)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0
    _libc_trim()
    try:
        _CLEAR_REFS.write_text("5")  # Linux >= 4.0: resets VmHWM (the peak RSS) to the current RSS
    except OSError:
        return None
    return _status_mib("VmRSS")


def peak_mib(device: torch.device, start: float | None) -> float:
    """CUDA: max allocated (weights included); CPU: the peak RSS above the row's start (the all-time peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _status_mib("VmHWM") if start is not None else None
    if peak is None or start is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak - start


# ------------------------------------------------------------------ one step
def build(variant: str, args: TrainStepArgs, device: torch.device, checkpointing: bool) -> LSDOModel:
    overrides = [f"model={args.model}", f"variant={variant}", f"model.grad_checkpointing={str(checkpointing).lower()}"]
    if args.model == "clip_b32":
        overrides.append("model.pretrained=null")
    if variant == "shared":
        overrides.append("variant.init=unique")  # no bank-filling pass: the step's cost is the same
    torch.manual_seed(0)
    return build_model(compose(overrides)).to(device).train()


def inputs(model: LSDOModel, b: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.image_size
    frames = torch.randn(b, n, 3, size, size, device=device)  # [B, n, 3, S, S]
    captions = [f"a red circle with a small cyan ring number {i}" for i in range(b)]
    return frames, model.tokenize(captions).to(device)  # [B, L]


def loss_function(
    model: LSDOModel, device: torch.device, bf16: bool
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss_of(frames: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            sims = model.similarity(model.encode_text(tokens), model.encode_video(frames))  # [B, B]
            return symmetric_infonce(sims.float(), model.logit_scale.float(), average=model.loss_averages_directions)

    return loss_of


def step_flops(variant: str, args: TrainStepArgs, device: torch.device, b: int, n: int) -> int:
    """Model FLOPs of one forward + backward (eager fp32, no checkpointing), SDPA through its math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = build(variant, args, device, checkpointing=False)
    frames, tokens = inputs(model, b, n, device)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        loss_function(model, device, bf16=False)(frames, tokens).backward()
    return int(counter.get_total_flops())


def time_mode(variant: str, args: TrainStepArgs, device: torch.device, b: int, n: int, mode: Mode) -> dict[str, float]:
    """Median step time (s) and peak memory (MiB) of one variant, shape and mode."""
    model = build(variant, args, device, mode.checkpointing)
    frames, tokens = inputs(model, b, n, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.2)
    loss_of = loss_function(model, device, mode.precision == "bf16")
    if mode.compiled:
        torch._dynamo.reset()  # a fresh compile per row (no recompilation limit across rows)
        loss_of = torch.compile(loss_of)
    start = reset_peak(device)  # after the model, inputs and optimiser exist: the steps' own memory on CPU
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss_of(frames, tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = peak_mib(device, start)
    del model, opt, loss_of
    return {"step_s": statistics.median(times), "peak_mb": peak, "exact_peak": float(start is not None)}


def _failure(exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0][:120]
    return f"{type(exc).__name__}: {first}".replace("|", "/")


def run(args: TrainStepArgs) -> int:
    logging.getLogger("lsdo.model.encoder").setLevel(logging.WARNING)  # one "CLIP: ..." line per row otherwise
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes, modes = plan(args, device)
    where, peaks = peak_tflops(device)
    peak_text = ", ".join(f"{p} {v:g}" for p, v in peaks.items()) if peaks else "unknown"
    memory = "CUDA max allocated" if device.type == "cuda" else "peak RSS above the RSS before the row's steps"
    print(
        f"model={args.model} device={device.type} ({where}) torch={torch.__version__} steps={args.steps} "
        f"warmup={args.warmup}; dense peak TFLOP/s: {peak_text}; memory: {memory}"
    )
    print()
    print(
        "| variant | batch × frames | precision | grad ckpt | compile | step (s) | clips/s | peak memory (MiB) "
        "| GFLOP/step | TFLOP/s | % of peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    failed = 0
    for variant in args.variants:
        for b, n in shapes:
            try:
                flops = step_flops(variant, args, device, b, n)
            except Exception as exc:  # noqa: BLE001 (an OOM at the largest shape: report, go on)
                flops = 0
                print(f"<!-- FLOP count failed for {variant} {b}x{n}: {_failure(exc)} -->")
            for mode in modes:
                head = (
                    f"| {variant} | {b} × {n} | {mode.precision} | {'on' if mode.checkpointing else 'off'} "
                    f"| {'on' if mode.compiled else 'off'} |"
                )
                try:
                    r = time_mode(variant, args, device, b, n, mode)
                except Exception as exc:  # noqa: BLE001 (OOM, compile errors: this row only)
                    failed += 1
                    print(f"{head} failed: {_failure(exc)} | | | | | |", flush=True)
                    continue
                finally:
                    gc.collect()
                tflops = flops / r["step_s"] / 1e12 if flops else float("nan")
                peak = peaks.get(mode.precision) if peaks else None
                share = f"{100 * tflops / peak:.1f}%" if peak and flops else "unknown"
                mem = f"{r['peak_mb']:.0f}" + ("" if r["exact_peak"] else " (process peak)")
                gflop = f"{flops / 1e9:.1f}" if flops else "n/a"
                rate = f"{tflops:.3g}" if flops else "n/a"
                print(
                    f"{head} {r['step_s']:.3f} | {b / r['step_s']:.1f} | {mem} | {gflop} | {rate} | {share} |",
                    flush=True,
                )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    from lsdo.cli.common import run_tool

    about = (__doc__ or "").split("\n\n")[0]
    return run_tool("python bench/train_step.py", TrainStepArgs, run, argv, about=about)


if __name__ == "__main__":
    sys.exit(main())
