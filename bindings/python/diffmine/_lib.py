"""ctypes declarations of libdiffmine's C API (include/diffmine.h) and the library lookup.

Everything here mirrors the header one to one; the Pythonic layer is in ``model.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
import threading
from pathlib import Path
from typing import Optional

__all__ = [
    "Error", "Status", "lib", "check", "library_path", "CModelOptions", "CModelInfo", "CImageView",
    "CTypicalityOptions", "CBox", "CFinetuneOptions", "CImageOptions", "CImageInfo", "CTranslateOptions",
    "CGenerateOptions", "CMinerOptions", "CMinedPatch", "CMinedCluster", "CParallelMinerOptions", "CCotypicalElement",
    "CParallelReportOptions", "PROGRESS_FN",
]


class Status(enum.IntEnum):
    """``dm_status``: the result of every C call (the numbers are part of the ABI)."""

    OK = 0
    ERR_NULL_ARGUMENT = 1
    ERR_INVALID_HANDLE = 2
    ERR_INVALID_ARGUMENT = 3
    ERR_BUFFER_TOO_SMALL = 4
    ERR_IO = 5
    ERR_INVALID_MODEL = 6
    ERR_CORRUPT_WEIGHTS = 7
    ERR_MISSING_TENSOR = 8
    ERR_SHAPE_MISMATCH = 9
    ERR_UNSUPPORTED = 10
    ERR_DEVICE = 11
    ERR_OUT_OF_MEMORY = 12
    ERR_CANCELLED = 13
    ERR_TORCH = 14
    ERR_INTERNAL = 15
    ERR_INVALID_DATA = 16


class Error(Exception):
    """A failed libdiffmine call: ``status`` is the ``dm_status`` (an int), ``message`` the library's
    explanation (``dm_last_error()``)."""

    def __init__(self, status: int, message: str) -> None:
        try:
            name = "DM_" + Status(status).name
        except ValueError:
            name = f"status {status}"
        super().__init__(f"{message} [{name}]")
        self.status = int(status)
        self.message = message


# --- C structs -----------------------------------------------------------------------------------

class CModelOptions(ctypes.Structure):
    """``dm_model_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("device", ctypes.c_char_p),
        ("dtype", ctypes.c_uint32),
        ("variant", ctypes.c_char_p),
        ("unet_path", ctypes.c_char_p),
        ("vae_path", ctypes.c_char_p),
        ("text_encoder_path", ctypes.c_char_p),
        ("tokenizer_path", ctypes.c_char_p),
        ("scheduler_path", ctypes.c_char_p),
        ("config_path", ctypes.c_char_p),
        ("sd_version", ctypes.c_uint32),
        ("prediction_type", ctypes.c_uint32),
        ("use_ema", ctypes.c_uint32),
    ]


class CModelInfo(ctypes.Structure):
    """``dm_model_info``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("latent_channels", ctypes.c_uint32),
        ("vae_scale_factor", ctypes.c_uint32),
        ("max_tokens", ctypes.c_uint32),
        ("text_embedding_dim", ctypes.c_uint32),
        ("train_steps", ctypes.c_uint32),
        ("prediction_type", ctypes.c_uint32),
        ("scaling_factor", ctypes.c_double),
    ]


class CImageView(ctypes.Structure):
    """``dm_image_view``."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("data_len", ctypes.c_size_t),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("channels", ctypes.c_uint32),
        ("pixel_type", ctypes.c_uint32),
        ("stride", ctypes.c_size_t),
    ]


class CImageOptions(ctypes.Structure):
    """``dm_image_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("frame", ctypes.c_uint32),
        ("window", ctypes.c_uint32),
        ("window_center", ctypes.c_double),
        ("window_width", ctypes.c_double),
        ("voi_function", ctypes.c_uint32),
    ]


class CImageInfo(ctypes.Structure):
    """``dm_image_info``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("channels", ctypes.c_uint32),
        ("is_dicom", ctypes.c_uint32),
        ("frames", ctypes.c_uint32),
        ("pixel_spacing_row", ctypes.c_double),
        ("pixel_spacing_column", ctypes.c_double),
        ("patient_id", ctypes.c_char_p),
        ("patient_name", ctypes.c_char_p),
        ("study_instance_uid", ctypes.c_char_p),
        ("series_instance_uid", ctypes.c_char_p),
        ("sop_instance_uid", ctypes.c_char_p),
        ("sop_class_uid", ctypes.c_char_p),
        ("modality", ctypes.c_char_p),
        ("view_position", ctypes.c_char_p),
        ("transfer_syntax_uid", ctypes.c_char_p),
    ]


class CCxr8Options(ctypes.Structure):
    """``dm_cxr8_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("working_size", ctypes.c_uint32),
        ("samples", ctypes.c_uint32),
        ("batch", ctypes.c_uint32),
        ("t_min", ctypes.c_double),
        ("t_max", ctypes.c_double),
        ("seed", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("diseases", ctypes.c_char_p),
    ]


class CTypicalityOptions(ctypes.Structure):
    """``dm_typicality_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("samples", ctypes.c_uint32),
        ("batch", ctypes.c_uint32),
        ("t_min", ctypes.c_double),
        ("t_max", ctypes.c_double),
        ("seed", ctypes.c_uint64),
        ("latent", ctypes.c_uint32),
        ("resize_short_side", ctypes.c_uint32),
        ("timesteps", ctypes.POINTER(ctypes.c_int64)),
        ("timesteps_len", ctypes.c_size_t),
        ("noise", ctypes.POINTER(ctypes.c_float)),
        ("noise_len", ctypes.c_size_t),
        ("antithetic", ctypes.c_uint32),
        ("stratified", ctypes.c_uint32),
    ]


class CBox(ctypes.Structure):
    """``dm_box``."""

    _fields_ = [
        ("x", ctypes.c_uint32),
        ("y", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("score", ctypes.c_float),
    ]


class CMinerOptions(ctypes.Structure):
    """``dm_miner_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("prompt_template", ctypes.c_char_p),
        ("null_prompt", ctypes.c_char_p),
        ("samples", ctypes.c_uint32),
        ("batch", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("resize_short_side", ctypes.c_uint32),
        ("patch_size", ctypes.c_uint32),
        ("per_image", ctypes.c_uint32),
        ("top", ctypes.c_uint32),
        ("dift_ensemble", ctypes.c_uint32),
        ("clusters", ctypes.c_uint32),
        ("restarts", ctypes.c_uint32),
        ("cache_dir", ctypes.c_char_p),
    ]


class CMinedPatch(ctypes.Structure):
    """``dm_mined_patch``."""

    _fields_ = [
        ("image", ctypes.c_uint32),
        ("x", ctypes.c_uint32),
        ("y", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("typicality", ctypes.c_float),
        ("cluster", ctypes.c_uint32),
        ("rank_in_cluster", ctypes.c_uint32),
        ("distance", ctypes.c_float),
    ]


class CMinedCluster(ctypes.Structure):
    """``dm_mined_cluster``."""

    _fields_ = [
        ("first", ctypes.c_uint32),
        ("members", ctypes.c_uint32),
        ("median_typicality", ctypes.c_float),
    ]


class CFinetuneOptions(ctypes.Structure):
    """``dm_finetune_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("steps", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("resolution", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("learning_rate", ctypes.c_double),
        ("beta1", ctypes.c_double),
        ("beta2", ctypes.c_double),
        ("weight_decay", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("max_grad_norm", ctypes.c_double),
        ("condition_dropout", ctypes.c_double),
        ("caption_template", ctypes.c_char_p),
        ("label_separator", ctypes.c_char_p),
        ("null_prompt", ctypes.c_char_p),
        ("checkpoint_every", ctypes.c_uint32),
        ("checkpoint_dir", ctypes.c_char_p),
        ("autocast_dtype", ctypes.c_uint32),
        ("gradient_checkpointing", ctypes.c_uint32),
    ]


class CTranslateOptions(ctypes.Structure):
    """``dm_translate_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("steps", ctypes.c_uint32),
        ("inversion_steps", ctypes.c_uint32),
        ("guidance", ctypes.c_double),
        ("resnet_injection", ctypes.c_double),
        ("attention_injection", ctypes.c_double),
        ("latent", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("null_prompt", ctypes.c_char_p),
    ]


class CParallelMinerOptions(ctypes.Structure):
    """``dm_parallel_miner_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("prompt_template", ctypes.c_char_p),
        ("null_prompt", ctypes.c_char_p),
        ("translate", ctypes.POINTER(CTranslateOptions)),
        ("samples", ctypes.c_uint32),
        ("batch", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("resize_short_side", ctypes.c_uint32),
        ("patch_size", ctypes.c_uint32),
        ("per_set", ctypes.c_uint32),
        ("top", ctypes.c_uint32),
        ("dift_ensemble", ctypes.c_uint32),
        ("clusters", ctypes.c_uint32),
        ("restarts", ctypes.c_uint32),
        ("projection_dims", ctypes.c_uint32),
        ("projection", ctypes.c_uint32),
        ("projection_neighbors", ctypes.c_uint32),
        ("versions_dir", ctypes.c_char_p),
    ]


class CCotypicalElement(ctypes.Structure):
    """``dm_cotypical_element``."""

    _fields_ = [
        ("image", ctypes.c_uint32),
        ("source_label", ctypes.c_uint32),
        ("x", ctypes.c_uint32),
        ("y", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("cotypicality", ctypes.c_float),
        ("cluster", ctypes.c_uint32),
        ("rank_in_cluster", ctypes.c_uint32),
        ("distance", ctypes.c_float),
    ]


class CParallelReportOptions(ctypes.Structure):
    """``dm_parallel_report_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("strips", ctypes.c_uint32),
        ("per_strip", ctypes.c_uint32),
    ]


class CGenerateOptions(ctypes.Structure):
    """``dm_generate_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("steps", ctypes.c_uint32),
        ("guidance", ctypes.c_double),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("null_prompt", ctypes.c_char_p),
    ]


# ``dm_progress_fn``: (done, total, value, user_data) -> non-zero to cancel.
PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_double, ctypes.c_void_p)

PIXEL_U8, PIXEL_U16, PIXEL_F32 = 0, 1, 2
DTYPE_FLOAT32, DTYPE_FLOAT16, DTYPE_BFLOAT16 = 0, 1, 2
PREDICTION_EPSILON, PREDICTION_V, PREDICTION_FROM_MODEL = 0, 1, 2
SD_VERSION_DETECT, SD_VERSION_1, SD_VERSION_2 = 0, 1, 2
LATENT_SAMPLE, LATENT_MEAN = 0, 1

_p = ctypes.POINTER
_c_status = ctypes.c_int  # a C enum is an int on every platform libtorch supports
_PROTOTYPES = {
    "dm_last_error": (ctypes.c_char_p, []),
    "dm_last_error_copy": (ctypes.c_size_t, [ctypes.c_char_p, ctypes.c_size_t]),
    "dm_version": (ctypes.c_char_p, []),
    "dm_model_options_default": (_c_status, [_p(CModelOptions)]),
    "dm_model_open": (_c_status, [ctypes.c_char_p, _p(CModelOptions), _p(ctypes.c_void_p)]),
    "dm_model_free": (_c_status, [ctypes.c_void_p]),
    "dm_model_load_lora": (_c_status, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float]),
    "dm_model_unload_lora": (_c_status, [ctypes.c_void_p]),
    "dm_model_get_info": (_c_status, [ctypes.c_void_p, _p(CModelInfo)]),
    "dm_model_latent_size": (
        _c_status, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, _p(ctypes.c_uint32), _p(ctypes.c_uint32)]),
    "dm_model_tokenize": (
        _c_status, [ctypes.c_void_p, ctypes.c_char_p, _p(ctypes.c_int64), ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_model_text_embeddings": (_c_status, [ctypes.c_void_p, ctypes.c_char_p, _p(ctypes.c_float), ctypes.c_size_t]),
    "dm_model_encode": (_c_status, [ctypes.c_void_p, _p(CImageView), _p(ctypes.c_float), ctypes.c_size_t]),
    "dm_model_decode": (
        _c_status,
        [ctypes.c_void_p, _p(ctypes.c_float), ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32,
         _p(ctypes.c_uint8), ctypes.c_size_t]),
    "dm_model_predict_noise": (
        _c_status,
        [ctypes.c_void_p, _p(ctypes.c_float), ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
         _p(ctypes.c_int64), ctypes.c_size_t, _p(ctypes.c_float), ctypes.c_size_t, ctypes.c_uint32,
         _p(ctypes.c_float), ctypes.c_size_t]),
    "dm_typicality_options_default": (_c_status, [_p(CTypicalityOptions)]),
    "dm_typicality_map_size": (
        _c_status, [_p(CImageView), _p(CTypicalityOptions), _p(ctypes.c_uint32), _p(ctypes.c_uint32)]),
    "dm_typicality_map": (
        _c_status,
        [ctypes.c_void_p, _p(CImageView), ctypes.c_char_p, ctypes.c_char_p, _p(CTypicalityOptions), PROGRESS_FN,
         ctypes.c_void_p, _p(ctypes.c_float), ctypes.c_size_t, _p(ctypes.c_float), ctypes.c_size_t]),
    "dm_translate_options_default": (_c_status, [_p(CTranslateOptions)]),
    "dm_generate_options_default": (_c_status, [_p(CGenerateOptions)]),
    "dm_model_translate": (
        _c_status,
        [ctypes.c_void_p, _p(CImageView), ctypes.c_char_p, _p(ctypes.c_char_p), ctypes.c_size_t, _p(CTranslateOptions),
         PROGRESS_FN, ctypes.c_void_p, _p(ctypes.c_uint8), ctypes.c_size_t, _p(ctypes.c_uint8), ctypes.c_size_t]),
    "dm_model_generate": (
        _c_status,
        [ctypes.c_void_p, _p(ctypes.c_char_p), ctypes.c_size_t, _p(CGenerateOptions), PROGRESS_FN, ctypes.c_void_p,
         _p(ctypes.c_uint8), ctypes.c_size_t]),
    "dm_patches_select": (
        _c_status,
        [_p(ctypes.c_float), ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
         _p(CBox), ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_image_options_default": (_c_status, [_p(CImageOptions)]),
    "dm_image_open": (_c_status, [ctypes.c_char_p, _p(CImageOptions), _p(ctypes.c_void_p)]),
    "dm_image_open_buffer": (
        _c_status, [_p(ctypes.c_uint8), ctypes.c_size_t, _p(CImageOptions), _p(ctypes.c_void_p)]),
    "dm_image_free": (_c_status, [ctypes.c_void_p]),
    "dm_image_get_view": (_c_status, [ctypes.c_void_p, _p(CImageView)]),
    "dm_image_get_info": (_c_status, [ctypes.c_void_p, _p(CImageInfo)]),
    "dm_dicom_new_uid": (_c_status, [ctypes.c_char_p, ctypes.c_size_t]),
    "dm_map_write_dicom": (
        _c_status,
        [ctypes.c_char_p, ctypes.c_uint32, _p(ctypes.c_float), ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32,
         ctypes.c_uint32, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "dm_cxr8_auc_pr": (
        _c_status,
        [_p(ctypes.c_float), ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32, _p(ctypes.c_double), ctypes.c_size_t,
         _p(ctypes.c_double), _p(ctypes.c_double)]),
    "dm_cxr8_options_default": (_c_status, [_p(CCxr8Options)]),
    "dm_cxr8_evaluate": (
        _c_status,
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
         _p(CCxr8Options), PROGRESS_FN, ctypes.c_void_p]),
    "dm_miner_options_default": (_c_status, [_p(CMinerOptions)]),
    "dm_miner_create": (_c_status, [ctypes.c_void_p, _p(CMinerOptions), _p(ctypes.c_void_p)]),
    "dm_miner_add_file": (_c_status, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]),
    "dm_miner_add_image": (_c_status, [ctypes.c_void_p, _p(CImageView), ctypes.c_char_p, ctypes.c_char_p]),
    "dm_miner_run": (_c_status, [ctypes.c_void_p, PROGRESS_FN, ctypes.c_void_p]),
    "dm_miner_image_count": (_c_status, [ctypes.c_void_p, _p(ctypes.c_size_t)]),
    "dm_miner_image_name": (
        _c_status, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_miner_label_count": (_c_status, [ctypes.c_void_p, _p(ctypes.c_size_t)]),
    "dm_miner_label_name": (
        _c_status, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_miner_patch_count": (_c_status, [ctypes.c_void_p, ctypes.c_uint32, _p(ctypes.c_size_t)]),
    "dm_miner_patches": (
        _c_status, [ctypes.c_void_p, ctypes.c_uint32, _p(CMinedPatch), ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_miner_cluster_count": (_c_status, [ctypes.c_void_p, ctypes.c_uint32, _p(ctypes.c_size_t)]),
    "dm_miner_clusters": (
        _c_status, [ctypes.c_void_p, ctypes.c_uint32, _p(CMinedCluster), ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_miner_write_report": (_c_status, [ctypes.c_void_p, ctypes.c_char_p]),
    "dm_miner_free": (_c_status, [ctypes.c_void_p]),
    "dm_parallel_miner_options_default": (_c_status, [_p(CParallelMinerOptions)]),
    "dm_parallel_miner_create": (
        _c_status, [ctypes.c_void_p, _p(ctypes.c_char_p), ctypes.c_size_t, _p(CParallelMinerOptions), _p(ctypes.c_void_p)]),
    "dm_parallel_miner_add_file": (_c_status, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]),
    "dm_parallel_miner_add_image": (_c_status, [ctypes.c_void_p, _p(CImageView), ctypes.c_char_p, ctypes.c_char_p]),
    "dm_parallel_miner_run": (_c_status, [ctypes.c_void_p, PROGRESS_FN, ctypes.c_void_p]),
    "dm_parallel_miner_image_count": (_c_status, [ctypes.c_void_p, _p(ctypes.c_size_t)]),
    "dm_parallel_miner_image_name": (
        _c_status, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_parallel_miner_element_count": (_c_status, [ctypes.c_void_p, _p(ctypes.c_size_t)]),
    "dm_parallel_miner_elements": (
        _c_status, [ctypes.c_void_p, _p(CCotypicalElement), ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_parallel_miner_cluster_count": (_c_status, [ctypes.c_void_p, _p(ctypes.c_size_t)]),
    "dm_parallel_miner_clusters": (
        _c_status, [ctypes.c_void_p, _p(CMinedCluster), ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_parallel_report_options_default": (_c_status, [_p(CParallelReportOptions)]),
    "dm_parallel_miner_write_report": (_c_status, [ctypes.c_void_p, ctypes.c_char_p, _p(CParallelReportOptions)]),
    "dm_parallel_miner_free": (_c_status, [ctypes.c_void_p]),
    "dm_finetune_options_default": (_c_status, [_p(CFinetuneOptions)]),
    "dm_finetune_run": (
        _c_status,
        [ctypes.c_char_p, _p(CModelOptions), ctypes.c_char_p, _p(CFinetuneOptions), ctypes.c_char_p, ctypes.c_char_p,
         PROGRESS_FN, ctypes.c_void_p]),
}

# --- library lookup ------------------------------------------------------------------------------

_REPO_BUILD = Path(__file__).resolve().parents[3] / "target" / "release" / "libdiffmine.so"


def library_path() -> str:
    """Where libdiffmine is loaded from: ``$DIFFMINE_LIB`` if set, else the repository's
    ``target/release/libdiffmine.so``, else what ``ctypes.util.find_library("diffmine")`` finds."""
    explicit = os.environ.get("DIFFMINE_LIB")
    if explicit:
        if not Path(explicit).is_file():
            raise OSError(f"DIFFMINE_LIB={explicit!r} is not a file")
        return explicit
    if _REPO_BUILD.is_file():
        return str(_REPO_BUILD)
    found = ctypes.util.find_library("diffmine")
    if found:
        return found
    raise OSError(
        "libdiffmine not found: set DIFFMINE_LIB to the path of libdiffmine.so, build it with "
        f"`cargo build --release` (looked for {_REPO_BUILD}), or install it where the dynamic linker finds it"
    )


_lib: Optional[ctypes.CDLL] = None
_lock = threading.Lock()


def lib() -> ctypes.CDLL:
    """The loaded library with its prototypes declared (loaded on first use)."""
    global _lib
    with _lock:
        if _lib is None:
            path = library_path()
            try:
                handle = ctypes.CDLL(path)
            except OSError as err:
                raise OSError(f"cannot load libdiffmine from {path}: {err}") from err
            for name, (restype, argtypes) in _PROTOTYPES.items():
                function = getattr(handle, name)
                function.restype = restype
                function.argtypes = argtypes
            _lib = handle
        return _lib


def last_error() -> str:
    """``dm_last_error()`` of this thread, decoded."""
    message = lib().dm_last_error()
    return message.decode("utf-8", errors="replace") if message else ""


def check(status: int) -> None:
    """Raises :class:`Error` with this thread's last error message unless ``status`` is DM_OK."""
    if status != Status.OK:
        raise Error(status, last_error())
