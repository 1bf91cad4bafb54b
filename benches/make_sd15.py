#!/usr/bin/env python3
"""Build a random-weight Stable Diffusion 1.5 pipeline folder at the real SD 1.5 shapes.

Usage: make_sd15.py OUT_DIR [--reduced]

Writes a diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/) with float32 *.safetensors weights: about 4.3 GB, the size of the Hub's
runwayml/stable-diffusion-v1-5 float32 download. The configurations are SD 1.5's, written out here
(nothing can be downloaded); the weights are seeded small normal values, not a trained model, so
this folder is for timing, memory and numerical parity only.

The tokenizer is a small hand-written CLIP BPE (byte alphabet, a few merges, BOS/EOS), because the
real 49408-entry vocabulary cannot be downloaded; it is not what the benchmark times. The text
encoder's own vocabulary is SD 1.5's 49408 entries, so its weights have the real shapes.

`--reduced` keeps SD 1.5's architecture (block types, layers per block, attention, VAE, CLIP text tower)
at narrow widths (UNet 32/64/64/64, VAE 32/64/64/64, text encoder 64 wide with 2 layers): the same code
paths at a size a CPU test runs in seconds (benches/gpu.sh with DEVICE=cpu).

Idempotent: does nothing when OUT_DIR/model_index.json exists. The folder is built next to OUT_DIR
and renamed into place, so an interrupted run leaves no half-written folder behind.
"""

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

if __name__ == "__main__" and len(sys.argv) in (2, 3) and (Path(sys.argv[1]) / "model_index.json").is_file():
    sys.exit(0)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
SEED = 1505

# runwayml/stable-diffusion-v1-5 unet/config.json (the values that differ from diffusers' defaults
# are cross_attention_dim and sample_size; the rest are spelled out for the reader).
UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    only_cross_attention=False,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
    use_linear_projection=False,
    upcast_attention=False,
)

# vae/config.json
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# text_encoder/config.json (openai/clip-vit-large-patch14's text tower). bos/eos/pad ids are the
# legacy values the SD 1.5 config carries (eos_token_id 2 makes transformers pool at argmax(ids)).
TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=MAX_LENGTH,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
    initializer_range=0.02,
    initializer_factor=1.0,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

# scheduler/scheduler_config.json
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    trained_betas=None,
)

# The --reduced widths (norm_num_groups 32 divides each; 8 attention heads as SD 1.5's UNet).
REDUCED_UNET = dict(block_out_channels=(32, 64, 64, 64), cross_attention_dim=64)
REDUCED_VAE = dict(block_out_channels=(32, 64, 64, 64))
REDUCED_TEXT = dict(hidden_size=64, intermediate_size=128, projection_dim=64, num_hidden_layers=2, num_attention_heads=4)

# Words the hand-written BPE merges spell as single tokens; everything else falls back to bytes.
WORDS = ["a", "photo", "of", "the", "cat", "dog", "chest", "x", "ray", "with", "and", "in"]


def bytes_to_unicode() -> list[str]:
    """The GPT-2/CLIP byte-level alphabet, printable bytes first (CLIP's id order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codepoints = printable[:]
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            codepoints.append(256 + shifted)
            shifted += 1
    return [chr(c) for c in codepoints]


def small_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-layout vocabulary: bytes, bytes+</w>, left-to-right merges spelling WORDS, BOS, EOS."""
    alphabet = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(alphabet)})
    merges = []
    for word in WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            token = pair[0] + pair[1]
            if token not in vocab:
                merges.append(pair)
                vocab[token] = len(vocab)
            symbols = [token] + symbols[2:]
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


@contextmanager
def no_init():
    """Skip torch.nn.init while modules are built: on 2 cores the default initialisers of a
    billion parameters take minutes; the parameters are filled by `fill_random` instead."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


@torch.no_grad()
def fill_random(module: torch.nn.Module, seed: int) -> None:
    """Seeded normal values scaled like a trained network's: matrices and kernels N(0, 1/fan_in),
    norm scales 1 + N(0, 0.02²), biases and embeddings N(0, 0.02²). Filled in chunks of at most
    16M values through a small buffer, so no full-size temporary is ever allocated."""
    generator = torch.Generator().manual_seed(seed)
    chunk = 1 << 24
    for name, param in module.named_parameters():
        flat = param.data.view(-1)
        if "embedding" in name:
            mean, std = 0.0, 0.02
        elif param.dim() >= 2:
            fan_in = param[0].numel()
            mean, std = 0.0, fan_in**-0.5
        elif name.endswith("weight"):
            mean, std = 1.0, 0.02
        else:
            mean, std = 0.0, 0.02
        for start in range(0, flat.numel(), chunk):
            part = flat[start : start + chunk]
            part.normal_(mean, std, generator=generator)


def build_pipeline(reduced: bool) -> tuple[StableDiffusionPipeline, dict[str, int], list[tuple[str, str]]]:
    vocab, merges = small_bpe()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=EOS, model_max_length=MAX_LENGTH)
    widths = (REDUCED_UNET, REDUCED_VAE, REDUCED_TEXT) if reduced else ({}, {}, {})
    with no_init():
        unet = UNet2DConditionModel(**{**UNET_CONFIG, **widths[0]}).eval()
        vae = AutoencoderKL(**{**VAE_CONFIG, **widths[1]}).eval()
        text_encoder = CLIPTextModel(CLIPTextConfig(**{**TEXT_CONFIG, **widths[2]})).eval()
    for i, model in enumerate((unet, vae, text_encoder)):
        fill_random(model, SEED + i)
        assert all(p.dtype == torch.float32 for p in model.parameters())
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ), vocab, merges


def prefix_text_encoder_keys(path: Path) -> None:
    """Name the text encoder's tensors `text_model.…`, as the SD 1.5 repository's file (written by
    transformers 4) does; transformers 5 saves CLIPTextModel without the prefix (and reads both)."""
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {k if k.startswith("text_model.") else f"text_model.{k}": f.get_tensor(k) for k in f.keys()}
    save_file(tensors, path, metadata=metadata)
    del tensors
    loaded = CLIPTextModel.from_pretrained(path.parent)
    with safe_open(path, framework="pt") as f:
        for name, param in loaded.named_parameters():
            key = name if name.startswith("text_model.") else f"text_model.{name}"
            if not torch.equal(param, f.get_tensor(key)):
                raise AssertionError(f"transformers does not read {key} back from {path}")


def main() -> int:
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--reduced"]):
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(sys.argv[1]).absolute()
    if (out_dir / "model_index.json").is_file():
        return 0
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        pipe, vocab, merges = build_pipeline(sys.argv[2:] == ["--reduced"])
        print(f"built in {time.time() - started:.1f}s", file=sys.stderr)
        pipe.save_pretrained(tmp, safe_serialization=True)
        # The SD 1.5 repository's tokenizer folder holds vocab.json + merges.txt (no tokenizer.json).
        tokenizer_dir = tmp / "tokenizer"
        (tokenizer_dir / "tokenizer.json").unlink(missing_ok=True)
        (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tokenizer_dir / "merges.txt").write_text(
            "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
        )
        prefix_text_encoder_keys(tmp / "text_encoder" / "model.safetensors")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sizes = {p.relative_to(out_dir).as_posix(): p.stat().st_size for p in sorted(out_dir.rglob("*.safetensors"))}
    print(json.dumps({"made": str(out_dir), "seconds": round(time.time() - started, 1), "weights": sizes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
