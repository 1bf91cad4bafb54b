"""Finetuning a model folder's UNet, or LoRA adapters on it, on a labelled image set (``dm_finetune_run``)."""

from __future__ import annotations

import ctypes
import os
from typing import Callable, Optional, Sequence

from . import _lib
from ._progress import Progress
from .model import PathLike, _c_string, _dtype_value, _invalid, _path_bytes, _real, _uint

__all__ = ["finetune"]


def finetune(
    model_path: PathLike,
    data: PathLike,
    out: PathLike,
    steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    resolution: Optional[int] = None,
    seed: Optional[int] = None,
    learning_rate: Optional[float] = None,
    caption_template: Optional[str] = None,
    null_prompt: Optional[str] = None,
    condition_dropout: Optional[float] = None,
    checkpoint_every: int = 0,
    checkpoint_dir: Optional[PathLike] = None,
    resume: Optional[PathLike] = None,
    device: str = "cpu",
    progress: Optional[Callable[[int, int, float], Optional[bool]]] = None,
    *,
    label_separator: Optional[str] = None,
    beta1: Optional[float] = None,
    beta2: Optional[float] = None,
    weight_decay: Optional[float] = None,
    eps: Optional[float] = None,
    max_grad_norm: Optional[float] = None,
    autocast: str = "float32",
    gradient_checkpointing: bool = False,
    lora_rank: Optional[int] = None,
    lora_alpha: Optional[float] = None,
    lora_targets: Optional[Sequence[str]] = None,
) -> str:
    """Finetunes the UNet of the diffusers folder ``model_path`` on the labelled set ``data`` (a folder
    with a sub-folder of images per label, or a ``path,label`` CSV) and writes the result as a
    diffusers folder ``out``, which :class:`diffmine.Model` opens. Returns ``out``.

    Options left as None keep the library's defaults (``dm_finetune_options_default``: 1000 steps,
    batch 8, resolution 512, seed 0, AdamW lr 1e-4, betas (0.9, 0.999), weight decay 1e-2, eps 1e-8,
    gradient clipping at 1.0, captions "Image of {label}." joined by ", ", null prompt "", condition
    dropout 0.05). Images are resized (shorter side) and centre-cropped to ``resolution``.
    ``checkpoint_every`` > 0 writes a resumable checkpoint into ``checkpoint_dir`` every that many
    steps; ``resume`` continues from such a checkpoint. Training runs on ``device`` with float32
    weights; ``autocast="bfloat16"`` runs the UNet under mixed precision ("float16" is refused: it
    would need loss scaling), and ``gradient_checkpointing`` recomputes each UNet block in the
    backward pass to save memory.

    ``lora_rank`` trains LoRA adapters of that rank on the UNet's attention projections instead of the
    whole UNet, the base weights frozen, and writes ``out/pytorch_lora_weights.safetensors``
    (diffusers/peft naming: ``Model.load_lora`` and diffusers' ``load_lora_weights`` read it). Their
    output is scaled by ``lora_alpha / lora_rank`` (``lora_alpha`` None: the rank);
    ``lora_targets`` picks the projections from ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` (None: all
    four).

    ``progress(step, total, loss)`` is called after each step; returning ``False`` cancels
    (:class:`diffmine.Cancelled`), and an exception it raises cancels and is
    re-raised here.
    """
    lib = _lib.lib()
    model_options = _lib.CModelOptions()
    _lib.check(lib.dm_model_options_default(ctypes.byref(model_options)))
    device_bytes = _c_string(device, "device")
    model_options.device = device_bytes

    options = _lib.CFinetuneOptions()
    _lib.check(lib.dm_finetune_options_default(ctypes.byref(options)))
    for field, value, bits in (("steps", steps, 32), ("batch_size", batch_size, 32), ("resolution", resolution, 32), ("seed", seed, 64)):
        if value is not None:
            setattr(options, field, _uint(value, field, bits))
    for field, value in (
        ("learning_rate", learning_rate), ("condition_dropout", condition_dropout), ("beta1", beta1), ("beta2", beta2),
        ("weight_decay", weight_decay), ("eps", eps), ("max_grad_norm", max_grad_norm),
    ):
        if value is not None:
            setattr(options, field, _real(value, field))
    # The bytes objects stay referenced by these locals for the whole call.
    texts = {
        "caption_template": None if caption_template is None else _c_string(caption_template, "caption_template"),
        "label_separator": None if label_separator is None else _c_string(label_separator, "label_separator"),
        "null_prompt": None if null_prompt is None else _c_string(null_prompt, "null_prompt"),
        "checkpoint_dir": _path_bytes(checkpoint_dir, "checkpoint_dir"),
    }
    for field, value in texts.items():
        setattr(options, field, value)
    options.checkpoint_every = _uint(checkpoint_every, "checkpoint_every")
    options.autocast_dtype = _dtype_value(autocast, "autocast dtype")
    options.gradient_checkpointing = bool(gradient_checkpointing)
    if lora_rank is None and (lora_alpha is not None or lora_targets is not None):
        raise _invalid("`lora_alpha` and `lora_targets` need `lora_rank`")
    if lora_rank is not None:
        # 0 in the C struct means "no LoRA": refused here rather than training the whole UNet.
        if _uint(lora_rank, "lora_rank") == 0:
            raise _invalid("LoRA rank must be at least 1")
        options.lora_rank = _uint(lora_rank, "lora_rank")
    if lora_alpha is not None:
        options.lora_alpha = _real(lora_alpha, "lora_alpha")
        if not options.lora_alpha > 0:
            raise _invalid(f"LoRA alpha must be positive and finite, got {lora_alpha}")
    if isinstance(lora_targets, str):
        raise _invalid("`lora_targets` is a sequence of names, e.g. ['to_q', 'to_v']")
    texts["lora_targets"] = None if lora_targets is None else _c_string(",".join(lora_targets), "lora_targets")
    options.lora_targets = texts["lora_targets"]

    reporter = Progress(progress, with_value=True)
    status = lib.dm_finetune_run(
        _path_bytes(model_path, "model_path"), ctypes.byref(model_options), _path_bytes(data, "data"),
        ctypes.byref(options), _path_bytes(resume, "resume"), _path_bytes(out, "out"), reporter.function, None)
    reporter.finish(status)
    return os.fspath(out)
