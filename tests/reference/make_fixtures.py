#!/usr/bin/env python3
"""Build tiny random-weight Stable Diffusion pipelines and reference outputs for the Rust tests.

Usage: make_fixtures.py OUT_DIR

For each configuration this writes OUT_DIR/<config>/, a diffusers pipeline folder (model_index.json,
unet/, vae/, text_encoder/, tokenizer/, scheduler/), plus reference.json and reference.safetensors
holding what diffusers/transformers compute from that folder. OUT_DIR belongs to this script: it is
replaced as a whole, and OUT_DIR/.stamp (a hash of this file) makes reruns free. A lock file
.<OUT_DIR name>.lock next to OUT_DIR serialises concurrent runs.
"""

import copy
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

# The pinned library versions are part of what the references depend on, so they are hashed too.
_REQUIREMENTS = Path(__file__).resolve().parents[2] / "scripts" / "requirements.txt"
STAMP = hashlib.sha256(Path(__file__).read_bytes() + _REQUIREMENTS.read_bytes()).hexdigest()


def is_current(out_dir: Path) -> bool:
    stamp_file = out_dir / ".stamp"
    return stamp_file.is_file() and stamp_file.read_text() == STAMP


# Importing torch and diffusers takes seconds; the usual run finds the fixtures already built.
if __name__ == "__main__" and len(sys.argv) == 2 and is_current(Path(sys.argv[1])):
    sys.exit(0)

# Everything is built locally; failing fast beats a test run hanging on a network lookup.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

MAX_LENGTH = 77
VOCAB_SIZE = 1000
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# The BPE merges are learned from this text, so the tokenizer splits common and domain words into
# multi-symbol tokens much like the real CLIP vocabulary does (a few non-ASCII words give merges
# between the byte-level characters of multi-byte UTF-8 sequences).
CORPUS = """
A chest X-ray is a projection radiograph of the chest used to diagnose conditions affecting the chest,
its contents and nearby structures. Chest radiographs are the most common film taken in medicine.
The frontal view is usually posteroanterior, with the patient standing and the film behind the chest;
a lateral view shows the heart, the spine and the posterior costophrenic angles. Findings include
pleural effusion, pneumothorax, pneumonia, consolidation, atelectasis, cardiomegaly, edema, emphysema,
fibrosis, infiltration, mass, nodule, hernia and pleural thickening. A support device such as a
pacemaker, a central venous catheter or an endotracheal tube may be seen. No acute cardiopulmonary
abnormality. The lungs are clear bilaterally. There is no focal consolidation, effusion or
pneumothorax. The cardiac silhouette is normal in size. The mediastinal contours are within normal
limits. Mild blunting of the left costophrenic angle suggests a small left pleural effusion. Patchy
opacity in the right lower lobe may represent pneumonia or aspiration. Increased interstitial markings
are compatible with mild pulmonary edema. The upper lobes, the hilum and the diaphragm appear normal.
Degenerative changes of the thoracic spine are noted. Compared with the prior study, the heart remains
enlarged and the effusion has decreased. The radiologist wrote the report and the physician read it.
A photograph of a red car parked on a quiet street in the evening light, painted in the style of an old
master. A small dog runs across a green field under a blue sky. A cat sleeps on a wooden table next to
a cup of coffee. The city at night, with tall buildings, bright windows and people walking in the rain.
A portrait of a woman with long hair, wearing a black dress, high quality, detailed, sharp focus.
A landscape with mountains, a lake and trees in autumn; golden leaves fall on the water. An astronaut
riding a horse on the moon, digital art, trending, beautiful, cinematic lighting. A house by the sea,
a boat in the harbour, children playing on the beach and birds flying over the waves. The train
station was crowded in the morning, and the old man waited for his daughter with flowers in his hand.
We're sure they'll come; it's what you'd expect, and I'm glad you've seen it. Don't stop, it isn't over.
In the 1950s and 1960s, cars were large; in 2024 they are electric. One, two, three, four, five.
The café served a naïve young poet a crème brûlée while he read his résumé aloud.
"""

# Text inputs for the tokenizer references: case, whitespace runs, punctuation, contractions, digits,
# non-ASCII (NFC composes "e\u0301"), literal special tokens, the empty text and one text that has to
# be truncated to MAX_LENGTH. With pad token "!" (sd2_tiny) transformers registers "!" as a special
# token, so a literal "!" there becomes id 0 on its own instead of going through BPE.
TEXTS = [
    "Chest X-Ray with Effusion.",
    "A car from the 1950s.",
    "",
    "a photo of a cat",
    "A PHOTO OF A DOG, HIGH QUALITY",
    "multiple   spaces\tand\ttabs\nand\n\nnewlines  ",
    "  leading and trailing whitespace \t\n",
    "Don't worry, It's fine; I'LL be there!",
    "they'd've gone: we're, you've, I'm, he'll, it’s (curly)",
    "Punctuation!?... (brackets) [square] {curly} <angle> @#$%^&*_+=~`|\\/\"",
    "Digits 0123456789, pi is 3.14159 and a million is 1,000,000",
    "café naïve résumé crème brûlée",
    "combining accent: cafe\u0301 and e\u0301",
    "日本語のテキスト",
    "emoji 🫁 lungs 😀 smile",
    "<|startoftext|>literal special tokens<|endoftext|> inside",
    "Cardiomegaly, pneumothorax and consolidation in the left lower lobe",
    " ".join(["Bilateral pleural effusions with patchy opacities at both lung bases, more on the left."] * 6),
]
# Indices into TEXTS run through the text encoder: two prompts, the empty text (what classifier-free
# guidance encodes) and the truncated one.
EMBEDDED_TEXTS = [0, 1, 2, len(TEXTS) - 1]

# (batch, height, width, timesteps). 9x11 is not a multiple of the UNet's downsampling factor, which
# makes diffusers pass explicit sizes to its upsamplers.
UNET_CASES = [
    (1, 8, 8, [999]),
    (2, 8, 8, [10, 500]),
    (3, 9, 11, [0, 250, 700]),
    (2, 16, 12, [100, 101]),
]
VAE_IMAGE_SIZES = [(32, 32), (24, 40)]


def bytes_to_unicode() -> list[str]:
    """The GPT-2/CLIP byte-level alphabet, in byte order of the printable bytes first (CLIP's id order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codepoints = printable[:]
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            codepoints.append(256 + shifted)
            shifted += 1
    return [chr(c) for c in codepoints]


def merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def learn_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a CLIP-layout vocabulary (bytes, bytes+</w>, merges, BOS, EOS) from CORPUS."""
    # Pre-tokenize exactly as CLIPTokenizer will (NFC, whitespace, lowercase, CLIP regex, byte-level),
    # using a throwaway tokenizer with the byte alphabet only.
    alphabet = bytes_to_unicode()
    splitter = CLIPTokenizer(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]).backend_tokenizer
    words = Counter(
        word
        for word, _ in splitter.pre_tokenizer.pre_tokenize_str(splitter.normalizer.normalize_str(CORPUS))
    )

    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(alphabet)})
    num_merges = VOCAB_SIZE - len(vocab) - 2
    # CLIP marks the end of a word on its last symbol.
    corpus = {tuple(w[:-1]) + (w[-1] + "</w>",): n for w, n in words.items()}
    merges = []
    while len(merges) < num_merges:
        pairs = Counter()
        for symbols, n in corpus.items():
            for pair in zip(symbols, symbols[1:]):
                # Two merge paths can spell the same token; keep every token string unique.
                if pair[0] + pair[1] not in vocab:
                    pairs[pair] += n
        if not pairs:
            raise RuntimeError(f"corpus too small for {num_merges} merges")
        # Ties are broken on the pair itself so the vocabulary never depends on dict order.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        corpus = {merge_pair(symbols, best): n for symbols, n in corpus.items()}
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def build_text_encoder(seed: int, tokenizer: CLIPTokenizer, hidden_act: str) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        hidden_act=hidden_act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def build_vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=0.18215,
    ).eval()


def build_scheduler(prediction_type: str) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )


def build_pipeline(vocab, merges, seed, *, pad_token, hidden_act, unet_kwargs, prediction_type):
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=MAX_LENGTH)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, cross_attention_dim=32, norm_num_groups=8, **unet_kwargs
    ).eval()
    return StableDiffusionPipeline(
        vae=build_vae(seed + 2),
        text_encoder=build_text_encoder(seed, tokenizer, hidden_act),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_fp16_variants(pipe: StableDiffusionPipeline, folder: Path, scratch: Path) -> None:
    """Add *.fp16.safetensors next to the fp32 weights, as the Hub's SD 1.5 repository has them.

    Only the weight files are kept: saving a half-precision transformers model would also rewrite
    text_encoder/config.json with dtype float16.
    """
    for name in ("unet", "vae", "text_encoder"):
        half = copy.deepcopy(getattr(pipe, name)).half()
        half.save_pretrained(scratch / name, variant="fp16", safe_serialization=True)
        for weights in (scratch / name).glob("*.fp16.safetensors"):
            shutil.move(weights, folder / name / weights.name)
    shutil.rmtree(scratch)


def rename_to_old_vae_attention_names(vae_dir: Path) -> None:
    """Store the VAE mid-block attention under the old AttentionBlock names (query/key/value/proj_attn).

    Many published VAE checkpoints still use them; diffusers renames them while loading.
    """
    path = vae_dir / "diffusion_pytorch_model.safetensors"
    old_names = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {}
        for key in f.keys():
            new_key = key
            if ".mid_block.attentions.0." in key:
                for new, old in old_names.items():
                    new_key = new_key.replace(f".attentions.0.{new}", f".attentions.0.{old}")
            tensors[new_key] = f.get_tensor(key)
    save_file(tensors, path, metadata=metadata)


def load_pipeline(folder: Path, **kwargs) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False, **kwargs
    )


def assert_same_weights(built, loaded, what: str) -> None:
    expected, actual = built.state_dict(), loaded.state_dict()
    if expected.keys() != actual.keys() or not all(torch.equal(expected[k], actual[k]) for k in expected):
        raise AssertionError(f"{what}: the saved folder does not reload to the built weights")


def pattern_image(generator: torch.Generator, height: int, width: int) -> torch.Tensor:
    """Smooth per-channel waves plus a little noise, kept inside the VAE's [-1, 1] input range."""
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    channels = []
    for _ in range(3):
        fy, fx, phase = torch.rand(3, generator=generator) * torch.tensor([3.0, 3.0, 2 * math.pi])
        channels.append(0.8 * torch.sin(2 * math.pi * (fy * y + fx * x) + phase))
    image = torch.stack(channels)[None] + 0.1 * torch.randn(1, 3, height, width, generator=generator)
    return image.clamp(-1, 1)


@torch.no_grad()
def reference_outputs(pipe: StableDiffusionPipeline, seed: int) -> tuple[dict, dict]:
    tensors, generator = {}, torch.Generator().manual_seed(seed)

    for i, text in enumerate(TEXTS):
        ids = pipe.tokenizer(text, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
        tensors[f"tokens.{i}"] = torch.tensor(ids, dtype=torch.int64)
    for i in EMBEDDED_TEXTS:
        hidden = pipe.text_encoder(tensors[f"tokens.{i}"][None]).last_hidden_state
        tensors[f"text_embeddings.{i}"] = hidden[0]

    vae, scaling = pipe.vae, pipe.vae.config.scaling_factor
    for j, (height, width) in enumerate(VAE_IMAGE_SIZES):
        image = pattern_image(generator, height, width)
        tensors[f"vae.{j}.image"] = image
        tensors[f"vae.{j}.latent_mean"] = vae.encode(image).latent_dist.mean * scaling
        decode_in = torch.randn(1, 4, height // 2, width // 2, generator=generator)
        tensors[f"vae.{j}.decode_in"] = decode_in
        tensors[f"vae.{j}.decoded"] = vae.decode(decode_in / scaling).sample

    for k, (batch, height, width, timesteps) in enumerate(UNET_CASES):
        latents = torch.randn(batch, 4, height, width, generator=generator)
        context = torch.randn(batch, MAX_LENGTH, 32, generator=generator)
        timesteps = torch.tensor(timesteps, dtype=torch.int64)
        tensors[f"unet.{k}.latents"] = latents
        tensors[f"unet.{k}.timesteps"] = timesteps
        tensors[f"unet.{k}.encoder_hidden_states"] = context
        tensors[f"unet.{k}.noise_pred"] = pipe.unet(latents, timesteps, context).sample

    typicality_reference(pipe, generator, tensors)
    dift_reference(pipe, generator, tensors)

    summary = {
        "texts": TEXTS,
        "embedded_texts": EMBEDDED_TEXTS,
        "unet_cases": len(UNET_CASES),
        "scaling_factor": scaling,
        "vae_images": len(VAE_IMAGE_SIZES),
        "typicality_prompts": list(TYPICALITY_PROMPTS),
    }
    return summary, tensors

# Label prompt, null prompt, and the number of (noise, t) samples of the typicality reference.
TYPICALITY_PROMPTS = ("Chest X-Ray with Effusion.", "Chest X-Ray.")
TYPICALITY_SAMPLES = 6


@torch.no_grad()
def typicality_reference(pipe: StableDiffusionPipeline, generator: torch.Generator, tensors: dict) -> None:
    """Eq. 3 of the paper as the authors' loop computes it, with explicit noise and timesteps so that
    libdiffmine can be given the same draws: per sample, the squared error of the noise prediction under
    the label prompt and under the null prompt, averaged over latent channels and upsampled bilinearly;
    the map is the mean over samples of null minus label. The latent is the posterior mean."""
    image = tensors["vae.0.image"]
    latent = pipe.vae.encode(image).latent_dist.mean * pipe.vae.config.scaling_factor
    noise = torch.randn(TYPICALITY_SAMPLES, *latent.shape[1:], generator=generator)
    timesteps = torch.randint(100, 700, (TYPICALITY_SAMPLES,), generator=generator)
    embeddings = []
    for prompt in TYPICALITY_PROMPTS:
        ids = pipe.tokenizer(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
        embeddings.append(pipe.text_encoder(ids.input_ids).last_hidden_state)
    alphas_cumprod = pipe.scheduler.alphas_cumprod
    losses = []
    for eps, t in zip(noise, timesteps):
        noisy = pipe.scheduler.add_noise(latent, eps[None], t[None])
        per_prompt = []
        for context in embeddings:
            output = pipe.unet(noisy, t[None], context).sample
            if pipe.scheduler.config.prediction_type == "v_prediction":
                abar = alphas_cumprod[t]
                output = abar.sqrt() * output + (1 - abar).sqrt() * noisy
            per_prompt.append(((output - eps[None]) ** 2).mean(1)[0])
        losses.append(torch.stack(per_prompt))
    losses = torch.stack(losses)
    difference = (losses[:, 1] - losses[:, 0])[:, None]
    upsampled = torch.nn.functional.interpolate(difference, size=image.shape[-2:], mode="bilinear", align_corners=False)
    tensors["typicality.latent"] = latent
    tensors["typicality.noise"] = noise
    tensors["typicality.timesteps"] = timesteps
    tensors["typicality.sample_losses"] = losses
    tensors["typicality.map"] = upsampled.mean(0)[0]

# The finetuning reference: AdamW steps of the paper's recipe on fixed batches.
TRAIN_STEPS = 3
TRAIN_BATCH = 2


def training_reference(folder: Path, generator: torch.Generator, tensors: dict) -> None:
    """Steps of diffusers' text-to-image finetuning recipe (epsilon MSE loss, gradient clipping to 1.0,
    torch.optim.AdamW with lr 1e-4, betas (0.9, 0.999), weight decay 1e-2) on explicit batches: the
    loss, the gradient norm before clipping, every clipped gradient of the first step, and every
    weight's change after the last step (the change, not the weight: weights barely move at lr 1e-4)."""
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32)
    unet.train()
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    before = {name: p.detach().clone() for name, p in unet.named_parameters()}
    for step in range(TRAIN_STEPS):
        latents = torch.randn(TRAIN_BATCH, 4, 8, 8, generator=generator)
        noise = torch.randn(TRAIN_BATCH, 4, 8, 8, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (TRAIN_BATCH,), generator=generator)
        context = torch.randn(TRAIN_BATCH, MAX_LENGTH, 32, generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps, context).sample.float(), noise.float())
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        if step == 0:
            for name, p in unet.named_parameters():
                tensors[f"train.grad.{name}"] = p.grad.detach().clone()
        optimizer.step()
        for key, value in (("latents", latents), ("noise", noise), ("timesteps", timesteps), ("context", context)):
            tensors[f"train.{step}.{key}"] = value
        tensors[f"train.{step}.loss"] = loss.detach().reshape(1)
        tensors[f"train.{step}.grad_norm"] = norm.detach().reshape(1)
    for name, p in unet.named_parameters():
        tensors[f"train.delta.{name}"] = p.detach() - before[name]


def autocast_training_reference(folder: Path, tensors: dict) -> None:
    """The first training step again under `torch.autocast("cpu", dtype=torch.bfloat16)`, as diffusers'
    training script runs with `mixed_precision="bf16"`: float32 weights, the loss on the prediction
    cast to float32; its loss, gradient norm before clipping and every clipped gradient."""
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32)
    unet.train()
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    batch = {key: tensors[f"train.0.{key}"] for key in ("latents", "noise", "timesteps", "context")}
    noisy = scheduler.add_noise(batch["latents"], batch["noise"], batch["timesteps"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prediction = unet(noisy, batch["timesteps"], batch["context"]).sample
    loss = torch.nn.functional.mse_loss(prediction.float(), batch["noise"].float())
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    tensors["train_bf16.loss"] = loss.detach().reshape(1)
    tensors["train_bf16.grad_norm"] = norm.detach().reshape(1)
    for name, p in unet.named_parameters():
        tensors[f"train_bf16.grad.{name}"] = p.grad.detach().clone()


DIFT_ENSEMBLE = 3


@torch.no_grad()
def dift_reference(pipe: StableDiffusionPipeline, generator: torch.Generator, tensors: dict) -> None:
    """DIFT as Tang et al.'s code computes it, with the posterior mean and explicit noise: the image's
    latent repeated per ensemble member, noised to t = 161, the output of up_blocks[1] (read with a
    forward hook) under the label prompt, averaged over the members."""
    image = tensors["vae.0.image"]
    latent = pipe.vae.encode(image).latent_dist.mean * pipe.vae.config.scaling_factor
    noise = torch.randn(DIFT_ENSEMBLE, *latent.shape[1:], generator=generator)
    t = torch.tensor(161)
    noisy = pipe.scheduler.add_noise(latent.repeat(DIFT_ENSEMBLE, 1, 1, 1), noise, t)
    ids = pipe.tokenizer(TYPICALITY_PROMPTS[0], padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
    context = pipe.text_encoder(ids.input_ids).last_hidden_state.repeat(DIFT_ENSEMBLE, 1, 1)
    captured = {}
    hook = pipe.unet.up_blocks[1].register_forward_hook(lambda module, args, output: captured.update(features=output))
    pipe.unet(noisy, t, context)
    hook.remove()
    tensors["dift.noise"] = noise
    tensors["dift.features"] = captured["features"].mean(0)


def kmeans_reference(tensors: dict) -> None:
    """scikit-learn's KMeans(n_init=10) inertia on DIFT-like data: 240 unit vectors in 32 dimensions
    around 12 directions, clustered into 8 (fewer clusters than groups, so restarts matter)."""
    from sklearn.cluster import KMeans

    generator = torch.Generator().manual_seed(7)
    directions = torch.nn.functional.normalize(torch.randn(12, 32, generator=generator), dim=1)
    points = directions.repeat_interleave(20, 0) + 0.3 * torch.randn(240, 32, generator=generator)
    points = torch.nn.functional.normalize(points, dim=1)
    fitted = KMeans(n_clusters=8, n_init=10, random_state=0).fit(points.double().numpy())
    tensors["kmeans.data"] = points
    tensors["kmeans.inertia"] = torch.tensor([fitted.inertia_], dtype=torch.float64)


def write_references(folder: Path, summary: dict, tensors: dict) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "reference.safetensors")
    (folder / "reference.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def make_sd15(folder: Path, vocab, merges) -> None:
    """SD 1.x layout: vocab.json + merges.txt tokenizer, quick_gelu, fp16 variants."""
    pipe = build_pipeline(
        vocab,
        merges,
        seed=1500,
        pad_token=EOS,
        hidden_act="quick_gelu",
        prediction_type="epsilon",
        unet_kwargs=dict(
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=2,
            attention_head_dim=2,
            use_linear_projection=False,
        ),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    # The original SD 1.5 tokenizer folder has no tokenizer.json; transformers 5 writes only that file,
    # so the slow-tokenizer files are written by hand instead.
    tokenizer_dir = folder / "tokenizer"
    (tokenizer_dir / "tokenizer.json").unlink()
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tokenizer_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    save_fp16_variants(pipe, folder, folder / "_fp16")

    loaded = load_pipeline(folder)
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(pipe, name), getattr(loaded, name), f"sd15_tiny/{name}")
    for text in TEXTS:
        if pipe.tokenizer(text).input_ids != loaded.tokenizer(text).input_ids:
            raise AssertionError(f"vocab.json/merges.txt tokenize {text!r} differently")
    summary, tensors = reference_outputs(loaded, seed=15)
    training_reference(folder, torch.Generator().manual_seed(16), tensors)
    autocast_training_reference(folder, tensors)
    kmeans_reference(tensors)
    summary["train_steps"] = TRAIN_STEPS

    # The fp16 files must form a loadable variant of the whole pipeline, not just of the UNet.
    load_pipeline(folder, variant="fp16", dtype=torch.float32)
    # Half-precision weights upcast to float32 on load: what a float32 run of the fp16 download computes.
    unet16 = UNet2DConditionModel.from_pretrained(folder / "unet", variant="fp16", dtype=torch.float32)
    with torch.no_grad():
        tensors["unet.fp16variant.noise_pred"] = unet16(
            tensors["unet.0.latents"], tensors["unet.0.timesteps"], tensors["unet.0.encoder_hidden_states"]
        ).sample
    write_references(folder, summary, tensors)


def make_sd2(folder: Path, vocab, merges) -> None:
    """SD 2.x layout: tokenizer.json only with pad "!", gelu, linear projections, v-prediction, old VAE names."""
    pipe = build_pipeline(
        vocab,
        merges,
        seed=2100,
        pad_token="!",
        hidden_act="gelu",
        prediction_type="v_prediction",
        unet_kwargs=dict(
            block_out_channels=(32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            attention_head_dim=[2, 4, 4],
            transformer_layers_per_block=[1, 2, 1],
            use_linear_projection=True,
            upcast_attention=True,
        ),
    )
    # transformers 5 already saves the SD 2 tokenizer layout: tokenizer.json and tokenizer_config.json
    # (no vocab.json, merges.txt or special_tokens_map.json).
    pipe.save_pretrained(folder, safe_serialization=True)
    rename_to_old_vae_attention_names(folder / "vae")

    loaded = load_pipeline(folder)
    # Proves diffusers maps query/key/value/proj_attn back onto the current attention layout.
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(pipe, name), getattr(loaded, name), f"sd2_tiny/{name}")
    summary, tensors = reference_outputs(loaded, seed=21)
    write_references(folder, summary, tensors)


CONFIGS = {"sd15_tiny": make_sd15, "sd2_tiny": make_sd2}


def build(out_dir: Path) -> None:
    """Build everything next to out_dir, then swap it in, so an interrupted run leaves out_dir as it was."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        vocab, merges = learn_bpe()
        for name, make in CONFIGS.items():
            make(tmp / name, vocab, merges)
        (tmp / ".stamp").write_text(STAMP)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(old / out_dir.name)
            shutil.rmtree(old)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(sys.argv[1]).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Test processes may start this concurrently; the others wait here and then find the stamp.
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_current(out_dir):
            return 0
        # Leftovers of runs that were killed before they could clean up.
        for kind in ("tmp", "old"):
            for stale in out_dir.parent.glob(f".{out_dir.name}.{kind}-*"):
                shutil.rmtree(stale, ignore_errors=True)
        torch.set_num_threads(2)
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        build(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
