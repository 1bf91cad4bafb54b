"""Writes the small valid examples each fuzz target starts from into fuzz/seeds/<target>/ (kept in
the repository; fuzz/run.sh adds the DICOM test files of the installed pydicom at run time).
Run from the repository root after the test fixtures exist: python fuzz/make_seeds.py"""
import io
import json
import pathlib
import struct

import numpy as np
from PIL import Image

root = pathlib.Path(__file__).resolve().parent.parent
seeds = root / "fuzz" / "seeds"
fixtures = root / "target" / "fixtures"


def write(target, name, data):
    folder = seeds / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def images():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = np.stack([grey, grey[::-1], grey.T], axis=-1)
    cases = {
        "grey.png": (Image.fromarray(grey), "PNG", {}),
        "rgb.png": (Image.fromarray(rgb), "PNG", {}),
        "rgba.png": (Image.fromarray(rgb).convert("RGBA"), "PNG", {}),
        "grey16.png": (Image.fromarray(grey.astype(np.uint16) * 257), "PNG", {}),
        "palette.png": (Image.fromarray(rgb).convert("P"), "PNG", {}),
        "grey.jpg": (Image.fromarray(grey), "JPEG", {"quality": 80}),
        "rgb.jpg": (Image.fromarray(rgb), "JPEG", {"quality": 80}),
        "progressive.jpg": (Image.fromarray(rgb), "JPEG", {"progressive": True}),
        "rgb.bmp": (Image.fromarray(rgb), "BMP", {}),
        "grey.bmp": (Image.fromarray(grey), "BMP", {}),
    }
    for name, (image, format, options) in cases.items():
        buffer = io.BytesIO()
        image.save(buffer, format=format, **options)
        write("image_buffer", name, buffer.getvalue())


def safetensors_file(tensors, metadata=None):
    """A safetensors file by hand: 8-byte header length, JSON header, data (the format's own layout)."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors():
    f32 = lambda n: np.arange(n, dtype=np.float32).tobytes()
    write("safetensors", "plain.safetensors", safetensors_file({"a": ("F32", [2, 3], f32(6)), "b": ("F16", [4], np.ones(4, np.float16).tobytes())}))
    write("safetensors", "metadata.safetensors", safetensors_file({"a": ("BF16", [2], b"\x80\x3f\x00\x40"), "b": ("I64", [0], b"")}, {"format": "pt"}))
    sd15 = {
        "model.diffusion_model.input_blocks.0.0.weight": ("F32", [2, 1, 1, 1], f32(2)),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": ("I64", [1, 1], np.zeros(1, np.int64).tobytes()),
        "first_stage_model.encoder.conv_in.bias": ("F32", [1], f32(1)),
        "model_ema.diffusion_modelinput_blocks000weight": ("F32", [1], f32(1)),
    }
    write("safetensors", "single_file_v1.safetensors", safetensors_file(sd15))
    sd2 = {
        "model.diffusion_model.input_blocks.0.0.weight": ("F32", [1], f32(1)),
        "cond_stage_model.model.token_embedding.weight": ("F32", [1, 2], f32(2)),
    }
    write("safetensors", "single_file_v2.safetensors", safetensors_file(sd2))


def model_configs():
    for model in ["sd15_tiny", "sd2_tiny"]:
        for component, name in [("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"), ("scheduler", "scheduler_config.json")]:
            write("model_config", f"{model}_{component}.json", (fixtures / model / component / name).read_bytes())


def tokenizers():
    files = ["tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json"]
    for model in ["sd15_tiny", "sd2_tiny"]:
        folder = fixtures / model / "tokenizer"
        parts = [(folder / name).read_bytes() if (folder / name).exists() else b"" for name in files]
        write("tokenizer", model, b"\xff".join(parts + [b"a chest x-ray, <|endoftext|> 42"]))


def csvs():
    write("cxr8_csv", "data_entry.csv", b"""Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],
00000001_000.png,Cardiomegaly,0,1,058Y,M,PA,2682,2749,0.143,0.143,
00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,
00000005_000.png,No Finding,0,5,69,F,PA,2048,2500,0.168,0.168,
""")
    write("cxr8_csv", "bbox_list.csv", b"""Image Index,Finding Label,Bbox [x,y,w,h],,,
00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661,,,
00029817_009.png,Infiltrate,614.4,288.711111111111,251.733333333333,276.764444444444,,,
"00013118_008.png",Atelectasis,400.5,100.25,50,60,,,
""")


images()
safetensors()
model_configs()
tokenizers()
csvs()
