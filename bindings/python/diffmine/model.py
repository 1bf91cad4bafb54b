"""The :class:`Model`: a loaded Stable Diffusion pipeline and its primitive operations, on numpy arrays."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._handle import Handle
from ._errors import InvalidArgument, Status
from ._lib import check
from ._progress import Progress

__all__ = ["Model", "ModelInfo", "version"]

PathLike = Union[str, "os.PathLike[str]"]

_DTYPES = {
    "float32": _lib.DTYPE_FLOAT32, "f32": _lib.DTYPE_FLOAT32, "fp32": _lib.DTYPE_FLOAT32,
    "float16": _lib.DTYPE_FLOAT16, "f16": _lib.DTYPE_FLOAT16, "fp16": _lib.DTYPE_FLOAT16, "half": _lib.DTYPE_FLOAT16,
    "bfloat16": _lib.DTYPE_BFLOAT16, "bf16": _lib.DTYPE_BFLOAT16,
}

_PIXEL_TYPES = {np.dtype(np.uint8): _lib.PIXEL_U8, np.dtype(np.uint16): _lib.PIXEL_U16, np.dtype(np.float32): _lib.PIXEL_F32}


def version() -> str:
    """The loaded library's version, "MAJOR.MINOR.PATCH"."""
    return _lib.lib().dm_version().decode()


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(Status.ERR_INVALID_ARGUMENT, message)


def _dtype_value(name: str, what: str) -> int:
    """The ``DM_DTYPE_*`` value of a dtype name."""
    if name not in _DTYPES:
        raise _invalid(f"unknown {what} {name!r} (use float32, float16 or bfloat16)")
    return _DTYPES[name]


def _reject_unknown(options: Dict[str, Any], known: Iterable[str], also: Iterable[str] = ()) -> None:
    """Refuses keyword options outside ``known``, naming every accepted one (``also``: those taken
    apart from ``known``), so a misspelt option is an error rather than silently ignored."""
    known = set(known)
    unknown = sorted(set(options) - known)
    if unknown:
        raise _invalid(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known | set(also)))})")


def _c_string(value: Union[str, bytes], what: str) -> bytes:
    """``value`` as a C string: UTF-8 (paths: the file system encoding), without an embedded NUL,
    which C would silently cut the string at."""
    data = value if isinstance(value, bytes) else value.encode()
    if b"\0" in data:
        raise _invalid(f"`{what}` contains a NUL character")
    return data


def _path_bytes(path: Optional[PathLike], what: str) -> Optional[bytes]:
    return None if path is None else _c_string(os.fsencode(path), what)


def _ptr(array: np.ndarray, ctype: type) -> ctypes._Pointer:  # type: ignore[name-defined]
    return array.ctypes.data_as(ctypes.POINTER(ctype))


def _uint(value: Any, what: str, bits: int = 32) -> int:
    """``value`` as an unsigned C integer of ``bits`` bits: an integer (not a bool or float) in range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _invalid(f"`{what}` must be an integer, got {value!r}")
    if not 0 <= int(value) < 1 << bits:
        raise _invalid(f"`{what}` = {value} is outside [0, {(1 << bits) - 1}]")
    return int(value)


def _real(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _invalid(f"`{what}` must be a number, got {value!r}") from None


_LATENTS = {"sample": _lib.LATENT_SAMPLE, "mean": _lib.LATENT_MEAN}

_CONVERTERS: Dict[Any, Callable[[Any, str], Any]] = {
    ctypes.c_uint32: _uint,
    ctypes.c_uint64: lambda value, what: _uint(value, what, 64),
    ctypes.c_double: _real,
}


def _set_latent(options: ctypes.Structure, latent: Optional[str]) -> None:
    """``options.latent`` from "sample" or "mean"; None keeps the library's default."""
    if latent is None:
        return
    if latent not in _LATENTS:
        raise _invalid(f"unknown latent {latent!r} (use \"sample\" or \"mean\")")
    options.latent = _LATENTS[latent]


def _set_sampling(options: ctypes.Structure, t_range: Optional[Tuple[float, float]] = None, latent: Optional[str] = None,
                  antithetic: Optional[bool] = None, stratified: Optional[bool] = None) -> None:
    """How typicality draws its samples, in a ``dm_typicality_options`` or ``dm_miner_options``: the t
    range (a pair of fractions of the training steps), the latent ("sample" or "mean") and the two
    variance reductions; None keeps the library's default."""
    _set_latent(options, latent)
    if t_range is not None:
        try:
            t_min, t_max = t_range
        except (TypeError, ValueError):
            raise _invalid(f"t_range must be a pair (t_min, t_max), got {t_range!r}") from None
        options.t_min, options.t_max = _real(t_min, "t_range[0]"), _real(t_max, "t_range[1]")
    if antithetic is not None:
        options.antithetic = bool(antithetic)
    if stratified is not None:
        options.stratified = bool(stratified)


def _override(options: ctypes.Structure, **values: Any) -> None:
    """Sets the numeric fields of ``options`` given a value; None keeps the library's default (which
    ``dm_*_options_default`` filled in), so no default is written twice."""
    types = dict(options._fields_)
    for field, value in values.items():
        if value is not None:
            setattr(options, field, _CONVERTERS[types[field]](value, field))


@dataclass(frozen=True)
class ModelInfo:
    """A model's sizes and constants (``dm_model_info``)."""

    latent_channels: int
    """Channels of a latent (4 for SD 1.5)."""
    vae_scale_factor: int
    """Image pixels per latent cell along each side (8 for SD 1.5)."""
    max_tokens: int
    """Tokens per prompt (77)."""
    text_embedding_dim: int
    """Width of a text embedding (768 for SD 1.5)."""
    train_steps: int
    """Training timesteps T; valid timesteps are 0..T-1."""
    prediction_type: str
    """``"epsilon"`` or ``"v_prediction"``: what :meth:`Model.predict_noise` returns."""
    scaling_factor: float
    """The VAE's latent scaling factor (0.18215 for SD 1.5)."""


class Model(Handle):
    """A Stable Diffusion pipeline loaded from a diffusers folder or a single-file checkpoint.

    ``device`` is "cpu", "cuda" or "cuda:N"; ``dtype`` the compute dtype ("float32", "float16" (CUDA
    only) or "bfloat16"); ``variant`` a weight file variant such as "fp16" (``*.fp16.safetensors``);
    ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` component folders to use instead
    of the pipeline folder's own.

    ``path`` may also be a single ``.safetensors`` file in the original SD 1.x/2.x layout. ``config``
    then names a diffusers folder whose configs (and tokenizer, scheduler) describe it, as diffusers'
    ``from_single_file(config=...)``; without it the original SD configs are used and ``tokenizer`` is
    required. ``sd_version`` (1 or 2) overrides the family detected from the weights,
    ``prediction_type`` ("epsilon" or "v_prediction") the scheduler's, and ``use_ema`` reads the UNet's
    EMA weights. Release it with :meth:`close` or a ``with`` block. A model may be used
    from several threads at once (the library releases the GIL while it computes).

    Every failure of the library raises a :class:`diffmine.Error` subclass with its ``status`` and message.
    """

    _free = "dm_model_free"
    _kind = "model"

    def __init__(
        self,
        path: PathLike,
        device: str = "cpu",
        dtype: str = "float32",
        variant: Optional[str] = None,
        unet: Optional[PathLike] = None,
        vae: Optional[PathLike] = None,
        text_encoder: Optional[PathLike] = None,
        tokenizer: Optional[PathLike] = None,
        scheduler: Optional[PathLike] = None,
        config: Optional[PathLike] = None,
        sd_version: Optional[int] = None,
        prediction_type: Optional[str] = None,
        use_ema: bool = False,
    ) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.device = device
        lib = _lib.lib()
        options = _lib.CModelOptions()
        check(lib.dm_model_options_default(ctypes.byref(options)))
        # The bytes objects stay referenced by these locals for the whole dm_model_open call.
        strings = {
            "device": _c_string(device, "device"),
            "variant": None if variant is None else _c_string(variant, "variant"),
            "unet_path": _path_bytes(unet, "unet"),
            "vae_path": _path_bytes(vae, "vae"),
            "text_encoder_path": _path_bytes(text_encoder, "text_encoder"),
            "tokenizer_path": _path_bytes(tokenizer, "tokenizer"),
            "scheduler_path": _path_bytes(scheduler, "scheduler"),
            "config_path": _path_bytes(config, "config"),
        }
        for field, value in strings.items():
            setattr(options, field, value)
        options.dtype = _dtype_value(dtype, "dtype")
        versions = {None: _lib.SD_VERSION_DETECT, 1: _lib.SD_VERSION_1, 2: _lib.SD_VERSION_2}
        predictions = {None: _lib.PREDICTION_FROM_MODEL, "epsilon": _lib.PREDICTION_EPSILON, "v_prediction": _lib.PREDICTION_V}
        if sd_version not in versions:
            raise _invalid(f"sd_version must be 1, 2 or None, got {sd_version!r}")
        if prediction_type not in predictions:
            raise _invalid(f"prediction_type must be \"epsilon\", \"v_prediction\" or None, got {prediction_type!r}")
        options.sd_version = versions[sd_version]
        options.prediction_type = predictions[prediction_type]
        options.use_ema = 1 if use_ema else 0
        handle = ctypes.c_void_p()
        check(lib.dm_model_open(_path_bytes(path, "path"), ctypes.byref(options), ctypes.byref(handle)))
        self._handle = handle.value
        raw = _lib.CModelInfo(struct_size=ctypes.sizeof(_lib.CModelInfo))
        check(lib.dm_model_get_info(self._handle, ctypes.byref(raw)))
        self.info = ModelInfo(
            latent_channels=raw.latent_channels,
            vae_scale_factor=raw.vae_scale_factor,
            max_tokens=raw.max_tokens,
            text_embedding_dim=raw.text_embedding_dim,
            train_steps=raw.train_steps,
            prediction_type="v_prediction" if raw.prediction_type == _lib.PREDICTION_V else "epsilon",
            scaling_factor=raw.scaling_factor,
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"device={self.device!r}"
        return f"Model({self.path!r}, {state})"

    # --- LoRA adapters ------------------------------------------------------------------------------

    def load_lora(self, path: PathLike, scale: float = 1.0) -> None:
        """Merges the LoRA adapter at ``path`` (``.safetensors``, diffusers/peft or kohya naming; UNet
        and/or text encoder) into the weights at ``scale``. A second adapter stacks on the first. An
        adapter for another model is refused with the layers' names, the model unchanged. Nothing else
        (a call on another thread, a miner made from this model) may use the model meanwhile."""
        check(_lib.lib().dm_model_load_lora(self._h(), _path_bytes(path, "path"), float(scale)))

    def unload_lora(self) -> None:
        """Removes every loaded adapter: the weights are the base model's again, bit for bit."""
        check(_lib.lib().dm_model_unload_lora(self._h()))

    # --- operations -----------------------------------------------------------------------------

    def tokenize(self, text: str) -> List[int]:
        """CLIP token ids of ``text``, padded to ``info.max_tokens``."""
        ids = np.empty(self.info.max_tokens, dtype=np.int64)
        count = ctypes.c_size_t()
        check(_lib.lib().dm_model_tokenize(self._h(), _c_string(text, "text"), _ptr(ids, ctypes.c_int64), ids.size, ctypes.byref(count)))
        return ids[: count.value].tolist()

    def text_embeddings(self, text: str) -> np.ndarray:
        """The text encoder's last hidden state for ``text``: (max_tokens, text_embedding_dim) float32."""
        out = np.empty((self.info.max_tokens, self.info.text_embedding_dim), dtype=np.float32)
        check(_lib.lib().dm_model_text_embeddings(self._h(), _c_string(text, "text"), _ptr(out, ctypes.c_float), out.size))
        return out

    def latent_size(self, height: int, width: int) -> Tuple[int, int]:
        """The latent (h, w) that :meth:`encode` makes of an image of ``height`` × ``width``."""
        h, w = ctypes.c_uint32(), ctypes.c_uint32()
        check(_lib.lib().dm_model_latent_size(self._h(), height, width, ctypes.byref(h), ctypes.byref(w)))
        return h.value, w.value

    def encode(self, image: np.ndarray) -> np.ndarray:
        """Encodes an image to latents (latent_channels, h, w) float32: the VAE posterior mean × scaling factor.

        ``image`` is H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA, alpha ignored), of uint8, uint16, or
        float32 in [0, 1] (other floats are converted to float32). Rows may be strided (a crop of a
        bigger array is passed without a copy); other layouts are copied first.
        """
        view, pixels = _image_view(image)  # `pixels` owns the memory the view points into
        h, w = self.latent_size(view.height, view.width)
        out = np.empty((self.info.latent_channels, h, w), dtype=np.float32)
        check(_lib.lib().dm_model_encode(self._h(), ctypes.byref(view), _ptr(out, ctypes.c_float), out.size))
        del pixels
        return out

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decodes latents (latent_channels, h, w), scaled as :meth:`encode` makes them, to an RGB image
        (h·f, w·f, 3) uint8, f = ``info.vae_scale_factor``. A leading batch axis of 1 is accepted."""
        z = np.ascontiguousarray(latents, dtype=np.float32)
        if z.ndim == 4 and z.shape[0] == 1:
            z = z[0]
        if z.ndim != 3:
            raise _invalid(f"latents must be ({self.info.latent_channels}, h, w), got shape {np.shape(latents)}")
        _, h, w = z.shape
        f = self.info.vae_scale_factor
        out = np.empty((h * f, w * f, 3), dtype=np.uint8)
        check(_lib.lib().dm_model_decode(self._h(), _ptr(z, ctypes.c_float), z.size, h, w, _ptr(out, ctypes.c_uint8), out.size))
        return out

    def predict_noise(
        self,
        latents: np.ndarray,
        timesteps: Union[int, np.ndarray, List[int]],
        text: Union[str, np.ndarray],
    ) -> np.ndarray:
        """The UNet's output (noise, or v for v-prediction models) for latents (B, latent_channels, h, w)
        at integer ``timesteps`` (B values, or one for all), conditioned on ``text``: a prompt (embedded
        once and used for every latent) or text embeddings (B, L, D) or (L, D). Returns (B, C, h, w) float32.
        """
        x = np.ascontiguousarray(latents, dtype=np.float32)
        if x.ndim != 4:
            raise _invalid(f"latents must be (B, {self.info.latent_channels}, h, w), got shape {x.shape}")
        batch, _, h, w = x.shape
        t = np.asarray(timesteps)
        if t.dtype.kind not in "iu":
            raise _invalid(f"timesteps must be integers, got {t.dtype}")
        t = np.ascontiguousarray(t.reshape(-1) if t.ndim == 0 else t, dtype=np.int64)
        if t.ndim != 1:
            raise _invalid(f"timesteps must be one value or a vector, got shape {t.shape}")
        context = self.text_embeddings(text) if isinstance(text, str) else np.asarray(text, dtype=np.float32)
        if context.ndim == 2:
            context = np.broadcast_to(context, (batch,) + context.shape)
        if context.ndim != 3:
            raise _invalid(f"text embeddings must be (B, L, D) or (L, D), got shape {context.shape}")
        context = np.ascontiguousarray(context, dtype=np.float32)
        out = np.empty_like(x)
        check(_lib.lib().dm_model_predict_noise(
            self._h(), _ptr(x, ctypes.c_float), x.size, batch, h, w, _ptr(t, ctypes.c_int64), t.size,
            _ptr(context, ctypes.c_float), context.size, context.shape[1], _ptr(out, ctypes.c_float), out.size))
        return out

    def typicality(
        self,
        image: np.ndarray,
        prompt: str,
        null_prompt: str = "",
        samples: Optional[int] = None,
        t_range: Optional[Tuple[float, float]] = None,
        seed: Optional[int] = None,
        batch: Optional[int] = None,
        latent: Optional[str] = None,
        timesteps: Optional[Union[Sequence[int], np.ndarray]] = None,
        noise: Optional[np.ndarray] = None,
        resize: Optional[int] = None,
        progress: Optional[Callable[[int, int], Optional[bool]]] = None,
        return_losses: bool = False,
        antithetic: bool = False,
        stratified: bool = False,
    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """The typicality map of ``image`` for ``prompt`` against ``null_prompt`` (the paper's Eq. 3):
        how much better the model predicts the noise with the label than without, per pixel. Returns an
        H×W float32 map (the image's size after ``resize``); positive means typical of the label.

        Options left as None keep the library's defaults (``dm_typicality_options_default``, shown in
        brackets). ``image`` is as for :meth:`encode`. ``samples`` is the number N of (noise, t) draws (100, or
        the number of ``timesteps`` when they are given); ``t_range`` the range of t as fractions of the
        training steps ((0.1, 0.7)); ``seed`` the image's random stream (42); ``batch`` samples per UNet
        call (10; the map does not depend on it beyond float rounding); ``latent`` "sample" (noise a sample of the VAE
        posterior, the authors' choice) or "mean". ``timesteps`` (N integers) and ``noise``
        (N × latent_channels × h × w float32, h × w the latent size of the map) replace the random
        draws; give both or neither. ``resize`` resizes the image first so its shorter side has that
        many pixels (Lanczos). ``antithetic`` draws the samples in pairs (ε, t) and (−ε, t);
        ``stratified`` draws each t within its own stratum of ``t_range`` (both off: the authors'
        i.i.d. draws).

        ``progress(done, total)`` is called after each UNet batch with the samples done; returning
        ``False`` cancels (:class:`diffmine.Cancelled`; the model stays usable), and
        an exception it raises cancels and is re-raised here. With ``return_losses`` the result is
        ``(map, losses)``, ``losses`` the N × 2 × h × w per-sample losses at latent resolution
        (index 0 under the label prompt, 1 under the null prompt).
        """
        lib = _lib.lib()
        handle = self._h()
        options = _lib.CTypicalityOptions()
        check(lib.dm_typicality_options_default(ctypes.byref(options)))
        _set_sampling(options, t_range=t_range, latent=latent, antithetic=antithetic, stratified=stratified)
        _override(options, seed=seed, batch=batch)
        options.resize_short_side = 0 if resize is None else _uint(resize, "resize")
        prompt_bytes = _c_string(prompt, "prompt")
        null_bytes = _c_string(null_prompt, "null_prompt")

        view, pixels = _image_view(image)  # `pixels` owns the memory the view points into
        height, width = ctypes.c_uint32(), ctypes.c_uint32()
        check(lib.dm_typicality_map_size(ctypes.byref(view), ctypes.byref(options), ctypes.byref(height), ctypes.byref(width)))
        h, w = height.value, width.value
        lh, lw = self.latent_size(h, w)

        # Explicit draws: converted here, but whether both are given is the library's check.
        t_array = e_array = None
        if timesteps is not None:
            t_array = np.asarray(timesteps)
            if t_array.dtype.kind not in "iu" or t_array.ndim != 1:
                raise _invalid(f"timesteps must be a vector of integers, got {t_array.dtype} of shape {t_array.shape}")
            t_array = np.ascontiguousarray(t_array, dtype=np.int64)
            options.timesteps, options.timesteps_len = _ptr(t_array, ctypes.c_int64), t_array.size
        if noise is not None:
            e_array = np.ascontiguousarray(noise, dtype=np.float32)
            n = e_array.shape[0] if t_array is None else t_array.size
            expected = (n, self.info.latent_channels, lh, lw)
            if e_array.shape != expected:
                raise _invalid(f"noise must be {expected} (N × latent of the {h}×{w} map), got shape {np.shape(noise)}")
            options.noise, options.noise_len = _ptr(e_array, ctypes.c_float), e_array.size
        if samples is None:
            samples = t_array.size if t_array is not None else 100
        options.samples = _uint(samples, "samples")

        out_map = np.empty((h, w), dtype=np.float32)
        losses = np.empty((options.samples, 2, lh, lw), dtype=np.float32) if return_losses else None
        losses_ptr = None if losses is None else _ptr(losses, ctypes.c_float)
        reporter = Progress(progress)
        status = lib.dm_typicality_map(
            handle, ctypes.byref(view), prompt_bytes, null_bytes, ctypes.byref(options), reporter.function, None,
            _ptr(out_map, ctypes.c_float), out_map.size, losses_ptr, 0 if losses is None else losses.size)
        reporter.finish(status)
        del pixels, t_array, e_array
        return (out_map, losses) if losses is not None else out_map

    def translate(
        self,
        image: np.ndarray,
        source_prompt: str,
        targets: Union[str, Sequence[str]],
        steps: Optional[int] = None,
        inversion_steps: Optional[int] = None,
        guidance: Optional[float] = None,
        resnet_injection: Optional[float] = None,
        attention_injection: Optional[float] = None,
        null_prompt: str = "",
        latent: Optional[str] = None,
        seed: Optional[int] = None,
        progress: Optional[Callable[[int, int], Optional[bool]]] = None,
        return_reconstruction: bool = False,
    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Translates ``image``, described by ``source_prompt``, to each of ``targets`` (a prompt or a
        sequence of prompts) with Plug-and-Play (Tumanyan et al. 2023): DDIM inversion of the image
        under the source prompt, then guided DDIM sampling towards each target while a source branch
        injects its features. Returns N×H×W×3 uint8, one RGB image per target at the image's size.

        Options left as None keep the library's defaults (``dm_translate_options_default``: 50 steps,
        999 inversion steps, guidance 7.5, injections 0.8 and 0.5, latent "mean", seed 42).
        ``image`` is as for :meth:`encode`. ``steps`` DDIM sampling steps; ``inversion_steps`` DDIM
        inversion steps (every sampling timestep must be one of the inversion's: 999, or equal to
        ``steps``, always works); ``guidance`` the classifier-free guidance scale (1: none);
        ``resnet_injection`` and ``attention_injection`` the fractions of the sampling steps, from the
        first, that inject the source branch's residual hidden state and self-attention queries and
        keys; ``null_prompt`` the prompt of the unconditional rows and the source branch; ``latent``
        "mean" (invert the VAE posterior mean, the authors' choice) or "sample" (a sample drawn with
        ``seed``).

        ``progress(done, total)`` is called after each UNet call (total: inversion + sampling steps);
        returning ``False`` cancels (:class:`diffmine.Cancelled`). With
        ``return_reconstruction`` the result is ``(images, reconstruction)``, the latter the H×W×3
        source decoded without edits: what the translations are to be compared with.
        """
        lib = _lib.lib()
        handle = self._h()
        options = _lib.CTranslateOptions()
        check(lib.dm_translate_options_default(ctypes.byref(options)))
        _set_latent(options, latent)
        _override(options, steps=steps, inversion_steps=inversion_steps, guidance=guidance,
                  resnet_injection=resnet_injection, attention_injection=attention_injection, seed=seed)
        options.null_prompt = _c_string(null_prompt, "null_prompt")
        source_bytes = _c_string(source_prompt, "source_prompt")
        target_array = _prompt_array(targets, "targets")

        view, pixels = _image_view(image)  # `pixels` owns the memory the view points into
        out = np.empty((len(target_array), view.height, view.width, 3), dtype=np.uint8)
        reconstruction = np.empty((view.height, view.width, 3), dtype=np.uint8) if return_reconstruction else None
        reporter = Progress(progress)
        status = lib.dm_model_translate(
            handle, ctypes.byref(view), source_bytes, target_array, len(target_array), ctypes.byref(options),
            reporter.function, None, _ptr(out, ctypes.c_uint8), out.size,
            None if reconstruction is None else _ptr(reconstruction, ctypes.c_uint8),
            0 if reconstruction is None else reconstruction.size)
        reporter.finish(status)
        del pixels
        return (out, reconstruction) if reconstruction is not None else out

    def generate(
        self,
        prompts: Union[str, Sequence[str]],
        steps: Optional[int] = None,
        guidance: Optional[float] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        seed: Optional[int] = None,
        null_prompt: str = "",
        progress: Optional[Callable[[int, int], Optional[bool]]] = None,
    ) -> np.ndarray:
        """Samples one image per prompt (a prompt or a sequence of prompts) with DDIM and classifier-free
        guidance, to see what a (finetuned) model has learnt. Returns N×height×width×3 uint8.

        Options left as None keep the library's defaults (``dm_generate_options_default``: 50 steps,
        guidance 7.5, 512×512, seed 42). ``seed`` seeds the initial noise (the library's own generator: the same on every machine);
        ``null_prompt`` is the prompt of the unconditional rows. ``progress(done, total)`` is called
        after each step; returning ``False`` cancels (DM_ERR_CANCELLED).
        """
        lib = _lib.lib()
        handle = self._h()
        options = _lib.CGenerateOptions()
        check(lib.dm_generate_options_default(ctypes.byref(options)))
        _override(options, steps=steps, guidance=guidance, height=height, width=width, seed=seed)
        options.null_prompt = _c_string(null_prompt, "null_prompt")
        prompt_array = _prompt_array(prompts, "prompts")
        out = np.empty((len(prompt_array), options.height, options.width, 3), dtype=np.uint8)
        reporter = Progress(progress)
        status = lib.dm_model_generate(
            handle, prompt_array, len(prompt_array), ctypes.byref(options), reporter.function, None,
            _ptr(out, ctypes.c_uint8), out.size)
        reporter.finish(status)
        return out


def _prompt_array(prompts: Union[str, Sequence[str]], what: str) -> "ctypes.Array[ctypes.c_char_p]":
    """``prompts`` as a C array of strings; one string is one prompt, not a sequence of characters.
    The array keeps its bytes objects alive. An empty list is passed on: the library's message says so."""
    items = [prompts] if isinstance(prompts, (str, bytes)) else list(prompts)
    for i, item in enumerate(items):
        if not isinstance(item, (str, bytes)):
            raise _invalid(f"`{what}[{i}]` must be a string, got {type(item).__name__}")
    encoded = [_c_string(item, f"{what}[{i}]") for i, item in enumerate(items)]
    return (ctypes.c_char_p * len(encoded))(*encoded)


def _image_view(image: np.ndarray) -> Tuple[_lib.CImageView, np.ndarray]:
    """A ``dm_image_view`` over ``image`` (copied only when its layout cannot be described by a row
    stride), and the array it points into, which must stay alive while the view is used."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, np.newaxis]
    if a.ndim != 3:
        raise _invalid(f"image must be H×W or H×W×C, got shape {a.shape}")
    if a.dtype.kind == "f" and a.dtype != np.float32:
        a = a.astype(np.float32)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype not in _PIXEL_TYPES:
        raise _invalid(f"image samples must be uint8, uint16 or float32, got {a.dtype}")
    height, width, channels = a.shape
    item = a.dtype.itemsize
    row = width * channels * item
    # The C view needs packed pixels within a row and rows a positive stride apart, at least a row long.
    packed = (channels <= 1 or a.strides[2] == item) and (width <= 1 or a.strides[1] == channels * item)
    if not packed or (height > 1 and a.strides[0] < row):
        a = np.ascontiguousarray(a)
    stride = a.strides[0] if height > 1 else row
    view = _lib.CImageView()
    view.data = a.ctypes.data
    view.data_len = stride * (height - 1) + row if height > 0 else 0
    view.width, view.height, view.channels = width, height, channels
    view.pixel_type = _PIXEL_TYPES[a.dtype]
    view.stride = stride
    return view, a
