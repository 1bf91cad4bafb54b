#!/usr/bin/env python3
"""References for single-file checkpoints and LoRA adapters, checked against diffusers.

Usage: models_reference.py FIXTURES_DIR OUT_DIR

FIXTURES_DIR is make_fixtures.py's output (the sd15_tiny and sd2_tiny pipelines). Into OUT_DIR go:

- single/<name>.safetensors: each pipeline in the original (CompVis / Stability) single-file layout,
  written with the inverse of diffusers' key conversion (UNet under model.diffusion_model.*, VAE under
  first_stage_model.*, the text encoder under cond_stage_model.transformer.* for SD 1.x and in
  OpenCLIP's layout with fused in_proj under cond_stage_model.model.* for SD 2.x). sd15_tiny's file
  also carries EMA weights (model_ema.*, the original's flat names) equal to its UNet's halved. The
  writer is checked by diffusers: StableDiffusionPipeline.from_single_file(file, config=<folder>)
  must read every UNet, VAE and text encoder tensor back equal to the folder's.
- lora/peft/pytorch_lora_weights.safetensors: a random LoRA (rank 4, both A and B random) on the
  sd15_tiny UNet's attention projections and proj_in (a 1x1 convolution) and on its text encoder's
  attention projections, made with peft and saved with diffusers' save_lora_weights.
- lora/kohya.safetensors: the same adapter in kohya's naming (lora_unet_*, lora_te_*, lora_down /
  lora_up / alpha), with alpha = rank / 2 and lora_up doubled so that it is the same adapter.
- lora/reference.safetensors + reference.json: UNet inputs and outputs of the base model and of the
  model with the adapter fused by diffusers' load_lora_weights + fuse_lora at SCALE, and the text
  embeddings of PROMPT with and without it. diffusers must compute the same from the kohya file.

OUT_DIR/.stamp (a hash of this file and of the fixtures' stamp) makes reruns free.
"""

import json
import os
import sys
from pathlib import Path

SCALE = 0.75
PROMPT = "a chest x-ray with a nodule"
RANK = 4

from fixture_stamps import exit_if_current, stamp_for  # noqa: E402  (this folder is on sys.path when run as a script)

if __name__ == "__main__":
    exit_if_current(__file__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


# ---------------------------------------------------------------------------------------------------
# Single file: diffusers' names -> the original layout's keys.


def unet_original_key(name: str, config: dict) -> str:
    top = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for new, old in top.items():
        if name.startswith(new):
            return old + name[len(new):]
    resnet = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
              "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}

    def resnet_key(rest):
        for new, old in resnet.items():
            if rest.startswith(new):
                return old + rest[len(new):]
        raise KeyError(rest)

    parts = name.split(".")
    layers = config["layers_per_block"]
    per_block = layers + 1
    if parts[0] == "mid_block":
        index, rest = int(parts[2]), ".".join(parts[3:])
        if parts[1] == "resnets":
            return f"middle_block.{0 if index == 0 else 2}.{resnet_key(rest)}"
        return f"middle_block.1.{rest}"
    block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
    if parts[0] == "down_blocks":
        first = 1 + block * per_block
        if kind == "resnets":
            return f"input_blocks.{first + index}.0.{resnet_key(rest)}"
        if kind == "attentions":
            return f"input_blocks.{first + index}.1.{rest}"
        return f"input_blocks.{first + layers}.0.op.{rest[len('conv.'):]}"
    first = block * (layers + 1)
    if kind == "resnets":
        return f"output_blocks.{first + index}.0.{resnet_key(rest)}"
    if kind == "attentions":
        return f"output_blocks.{first + index}.1.{rest}"
    position = 2 if "CrossAttn" in config["up_block_types"][block] else 1
    return f"output_blocks.{first + layers}.{position}.{rest}"


def vae_original_key(name: str, levels: int) -> str:
    side, _, rest = name.partition(".")
    if side not in ("encoder", "decoder"):
        return name
    for new, old in {"conv_norm_out.": "norm_out."}.items():
        if rest.startswith(new):
            return f"{side}.{old}{rest[len(new):]}"
    parts = rest.split(".")
    if parts[0] in ("conv_in", "conv_out"):
        return name

    def resnet(tail):
        return tail.replace("conv_shortcut.", "nin_shortcut.")

    if parts[0] == "mid_block":
        index, tail = int(parts[2]), ".".join(parts[3:])
        if parts[1] == "resnets":
            return f"{side}.mid.block_{index + 1}.{resnet(tail)}"
        attention = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
        for new, old in attention.items():
            if tail.startswith(new):
                return f"{side}.mid.attn_1.{old}{tail[len(new):]}"
        raise KeyError(name)
    level, kind, index, tail = int(parts[1]), parts[2], parts[3], ".".join(parts[4:])
    if side == "decoder":
        level = levels - 1 - level
    original_level = "down" if side == "encoder" else "up"
    if kind == "resnets":
        return f"{side}.{original_level}.{level}.block.{index}.{resnet(tail)}"
    sampler = "downsample" if kind == "downsamplers" else "upsample"
    return f"{side}.{original_level}.{level}.{sampler}.{tail}"


def vae_original_tensor(name: str, tensor: torch.Tensor) -> torch.Tensor:
    # The original VAE attention's projections are 1x1 convolutions.
    if ".mid_block.attentions." in name and name.endswith("weight") and tensor.dim() == 2:
        return tensor[:, :, None, None]
    return tensor


def open_clip_tensors(state: dict) -> dict:
    out = {}
    prefix = "cond_stage_model.model."
    top = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.final_layer_norm.weight": "ln_final.weight",
           "text_model.final_layer_norm.bias": "ln_final.bias"}
    for name, old in top.items():
        out[prefix + old] = state[name]
    layer = 0
    while f"text_model.encoder.layers.{layer}.layer_norm1.weight" in state:
        d = f"text_model.encoder.layers.{layer}."
        o = f"{prefix}transformer.resblocks.{layer}."
        for leaf in ("weight", "bias"):
            out[f"{o}attn.in_proj_{leaf}"] = torch.cat([state[f"{d}self_attn.{p}_proj.{leaf}"] for p in "qkv"])
            for new, old in {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
                             "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}.items():
                out[f"{o}{old}.{leaf}"] = state[f"{d}{new}.{leaf}"]
        layer += 1
    return out


def write_single_file(folder: Path, path: Path, open_clip: bool, with_ema: bool):
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    state = {}
    unet_config = dict(pipe.unet.config)
    for name, tensor in pipe.unet.state_dict().items():
        key = "model.diffusion_model." + unet_original_key(name, unet_config)
        state[key] = tensor.contiguous()
        if with_ema:
            state["model_ema." + "".join(key.split(".")[1:])] = (tensor * 0.5).contiguous()
    levels = len(pipe.vae.config.block_out_channels)
    for name, tensor in pipe.vae.state_dict().items():
        state["first_stage_model." + vae_original_key(name, levels)] = vae_original_tensor(name, tensor).contiguous()
    # Original files name the text tower text_model.* (transformers 5 leaves that level out of the
    # state dict).
    text_state = {("" if k.startswith("text_model.") else "text_model.") + k: v
                  for k, v in pipe.text_encoder.state_dict().items() if not k.endswith("position_ids")}
    if open_clip:
        state.update({k: v.contiguous() for k, v in open_clip_tensors(text_state).items()})
    else:
        state.update({"cond_stage_model.transformer." + k: v.contiguous() for k, v in text_state.items()})
    save_file(state, path)
    check_single_file(pipe, path, folder)


def check_single_file(pipe, path: Path, folder: Path):
    """diffusers must read the file back equal to the folder: this checks the writer."""
    loaded = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True, safety_checker=None)
    for component in ("unet", "vae", "text_encoder"):
        want = getattr(pipe, component).state_dict()
        got = getattr(loaded, component).state_dict()
        for name, tensor in want.items():
            if name.endswith("position_ids"):
                continue
            assert name in got, f"{path.name}: diffusers did not read {component}.{name}"
            assert torch.equal(got[name], tensor), f"{path.name}: {component}.{name} differs after from_single_file"


# ---------------------------------------------------------------------------------------------------
# LoRA


def randomise(module, generator):
    for name, parameter in module.named_parameters():
        if "lora_" in name:
            with torch.no_grad():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def make_lora(folder: Path, out: Path, inputs: dict):
    """Makes, saves and returns the adapter's own outputs at SCALE (peft's layers, unfused)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    generator = torch.Generator().manual_seed(22)
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in"]))
    # Through peft itself: transformers' add_adapter asks for a newer peft than is published.
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]), pipe.text_encoder)
    randomise(pipe.unet, generator)
    randomise(pipe.text_encoder, generator)
    peft_dir = out / "peft"
    StableDiffusionPipeline.save_lora_weights(
        peft_dir,
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
        safe_serialization=True,
    )
    from safetensors.torch import load_file

    saved = load_file(peft_dir / "pytorch_lora_weights.safetensors")
    assert saved and all(t.abs().sum() > 0 for t in saved.values()), "a saved LoRA tensor is zero"
    write_kohya(saved, out / "kohya.safetensors")
    for module in list(pipe.unet.modules()) + list(pipe.text_encoder.modules()):
        if isinstance(module, BaseTunerLayer):
            module.scale_layer(SCALE)
    return outputs(pipe, inputs)


LORA_SUFFIXES = {".lora_A.weight": "down", ".lora.down.weight": "down", ".lora_linear_layer.down.weight": "down",
                 ".lora_B.weight": "up", ".lora.up.weight": "up", ".lora_linear_layer.up.weight": "up"}


def write_kohya(saved: dict, path: Path):
    kohya = {}
    for key, tensor in saved.items():
        component, _, rest = key.partition(".")
        suffix = next(s for s in LORA_SUFFIXES if rest.endswith(s))
        module = rest[: -len(suffix)]
        if component == "text_encoder" and not module.startswith("text_model."):
            module = "text_model." + module
        name = ("lora_unet_" if component == "unet" else "lora_te_") + module.replace(".", "_")
        if LORA_SUFFIXES[suffix] == "down":
            kohya[name + ".lora_down.weight"] = tensor.contiguous()
            kohya[name + ".alpha"] = torch.tensor(RANK / 2)
        else:
            kohya[name + ".lora_up.weight"] = (tensor * 2).contiguous()
    save_file(kohya, path)


def lora_outputs(folder: Path, lora: Path, inputs: dict):
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    if lora is not None:
        if lora.is_dir():
            pipe.load_lora_weights(str(lora))
        else:
            pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
        pipe.fuse_lora(lora_scale=SCALE)
    return outputs(pipe, inputs)


def outputs(pipe, inputs: dict):
    with torch.no_grad():
        ids = pipe.tokenizer([PROMPT], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        embeddings = pipe.text_encoder(ids)[0]
        noise = pipe.unet(inputs["latents"], inputs["timesteps"], encoder_hidden_states=inputs["context"]).sample
    return {"text_embeddings": embeddings, "unet_output": noise}


def lora_reference(folder: Path, out: Path):
    generator = torch.Generator().manual_seed(7)
    inputs = {
        "latents": torch.randn(2, 4, 8, 8, generator=generator),
        "timesteps": torch.tensor([10, 700]),
        "context": torch.randn(2, 77, 32, generator=generator),
    }
    direct = make_lora(folder, out, inputs)
    base = lora_outputs(folder, None, inputs)
    adapted = lora_outputs(folder, out / "peft", inputs)
    kohya = lora_outputs(folder, out / "kohya.safetensors", inputs)
    for name in adapted:
        change = (adapted[name] - base[name]).abs().max().item()
        assert change > 1e-2, f"the adapter changes {name} by only {change}"
        for what, got in (("the saved file", adapted), ("the kohya copy", kohya)):
            diff = (direct[name] - got[name]).abs().max().item()
            assert diff < 1e-5, f"diffusers' load_lora_weights of {what} differs from the adapter's own {name} by {diff}"
    tensors = dict(inputs)
    tensors.update({f"base.{k}": v for k, v in base.items()})
    tensors.update({f"adapted.{k}": v for k, v in adapted.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / "reference.safetensors")
    (out / "reference.json").write_text(json.dumps({"scale": SCALE, "prompt": PROMPT, "rank": RANK}))


def main():
    fixtures, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.manual_seed(0)
    (out / "single").mkdir(parents=True, exist_ok=True)
    (out / "lora").mkdir(parents=True, exist_ok=True)
    write_single_file(fixtures / "sd15_tiny", out / "single" / "sd15_tiny.safetensors", open_clip=False, with_ema=True)
    write_single_file(fixtures / "sd2_tiny", out / "single" / "sd2_tiny.safetensors", open_clip=True, with_ema=False)
    lora_reference(fixtures / "sd15_tiny", out / "lora")
    (out / ".stamp").write_text(stamp_for(__file__, fixtures / ".stamp"))


if __name__ == "__main__":
    main()
