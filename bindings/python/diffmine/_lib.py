"""ctypes declarations of libdiffmine's C API (include/diffmine.h), the library lookup, and the
forwarding of the library's log to Python's ``logging``.

Everything here mirrors the header one to one (tests/option_structs.rs checks every struct's layout and
the defaults against C); the Pythonic layer is in ``model.py``.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import threading
from pathlib import Path
from typing import Optional

from ._errors import Error, Status, error_for

__all__ = [
    "Error", "Status", "lib", "check", "library_path", "CModelOptions", "CModelInfo", "CImageView",
    "CTypicalityOptions", "CBox", "CFinetuneOptions", "CImageOptions", "CImageInfo", "CTranslateOptions",
    "CGenerateOptions", "CMinerOptions", "CMinedPatch", "CMinedCluster", "CMinedImageInfo", "CCandidate", "CClusteredPatch", "CParallelMinerOptions", "CCotypicalElement",
    "CParallelReportOptions", "PROGRESS_FN", "LOG_FN",
]


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


class CDicomMapOptions(ctypes.Structure):
    """``dm_dicom_map_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("kind", ctypes.c_uint32),
        ("label", ctypes.c_char_p),
        ("prompt", ctypes.c_char_p),
        ("null_prompt", ctypes.c_char_p),
        ("samples", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("series_instance_uid", ctypes.c_char_p),
        ("series_description", ctypes.c_char_p),
        ("series_number", ctypes.c_uint32),
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
        ("t_min", ctypes.c_double),
        ("t_max", ctypes.c_double),
        ("latent", ctypes.c_uint32),
        ("antithetic", ctypes.c_uint32),
        ("stratified", ctypes.c_uint32),
    ]


class CMinedImageInfo(ctypes.Structure):
    """``dm_mined_image_info``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("map_width", ctypes.c_uint32),
        ("map_height", ctypes.c_uint32),
    ]


class CCandidate(ctypes.Structure):
    """``dm_candidate``."""

    _fields_ = [
        ("image", ctypes.c_char_p),
        ("x", ctypes.c_uint32),
        ("y", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("typicality", ctypes.c_float),
    ]


class CClusteredPatch(ctypes.Structure):
    """``dm_clustered_patch``."""

    _fields_ = [
        ("candidate", ctypes.c_uint32),
        ("cluster", ctypes.c_uint32),
        ("rank_in_cluster", ctypes.c_uint32),
        ("distance", ctypes.c_float),
    ]


class CDoerschOptions(ctypes.Structure):
    """``dm_doersch_options``."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("resize_short_side", ctypes.c_uint32),
        ("candidates", ctypes.c_uint32),
        ("detectors", ctypes.c_uint32),
        ("rounds", ctypes.c_uint32),
        ("negatives", ctypes.c_uint32),
        ("negative_pool", ctypes.c_uint32),
        ("final_neighbours", ctypes.c_uint32),
        ("keep", ctypes.c_uint32),
        ("bfloat16", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
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
        ("lora_rank", ctypes.c_uint32),
        ("lora_alpha", ctypes.c_double),
        ("lora_targets", ctypes.c_char_p),
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
# ``dm_log_fn``: (level, target, message, user_data).
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)

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
    "dm_log_set_callback": (_c_status, [LOG_FN, ctypes.c_int32, ctypes.c_void_p]),
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
    "dm_dicom_map_options_default": (_c_status, [_p(CDicomMapOptions)]),
    "dm_map_write_dicom_object": (
        _c_status,
        [ctypes.c_char_p, ctypes.c_uint32, _p(ctypes.c_float), ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32,
         _p(CDicomMapOptions), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "dm_cxr8_auc_pr": (
        _c_status,
        [_p(ctypes.c_float), ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32, _p(ctypes.c_double), ctypes.c_size_t,
         _p(ctypes.c_double), _p(ctypes.c_double)]),
    "dm_cxr8_options_default": (_c_status, [_p(CCxr8Options)]),
    "dm_cxr8_evaluate": (
        _c_status,
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
         _p(CCxr8Options), PROGRESS_FN, ctypes.c_void_p]),
    "dm_doersch_options_default": (_c_status, [_p(CDoerschOptions)]),
    "dm_doersch_run": (_c_status, [ctypes.c_char_p, ctypes.c_char_p, _p(CDoerschOptions), PROGRESS_FN, ctypes.c_void_p]),
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
    "dm_mining_list_set": (_c_status, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_mining_image": (
        _c_status,
        [ctypes.c_void_p, _p(CMinerOptions), _p(CImageView), ctypes.c_char_p, _p(CBox), ctypes.c_size_t,
         _p(ctypes.c_size_t), _p(ctypes.c_float), ctypes.c_size_t, _p(CMinedImageInfo)]),
    "dm_mining_top": (
        _c_status, [_p(CCandidate), ctypes.c_size_t, ctypes.c_uint32, _p(ctypes.c_size_t), ctypes.c_size_t, _p(ctypes.c_size_t)]),
    "dm_mining_feature_dim": (_c_status, [ctypes.c_void_p, _p(ctypes.c_size_t)]),
    "dm_mining_box_features": (
        _c_status,
        [ctypes.c_void_p, _p(CMinerOptions), _p(CImageView), ctypes.c_char_p, _p(CBox), ctypes.c_size_t,
         _p(ctypes.c_float), ctypes.c_size_t]),
    "dm_mining_cluster": (
        _c_status,
        [_p(CCandidate), ctypes.c_size_t, _p(ctypes.c_float), ctypes.c_size_t, ctypes.c_size_t, _p(CMinerOptions),
         _p(CClusteredPatch), ctypes.c_size_t, _p(ctypes.c_size_t), _p(CMinedCluster), ctypes.c_size_t,
         _p(ctypes.c_size_t)]),
    "dm_report_new": (_c_status, [_p(CMinerOptions), _p(ctypes.c_void_p)]),
    "dm_report_add_label": (
        _c_status,
        [ctypes.c_void_p, ctypes.c_char_p, _p(CCandidate), ctypes.c_size_t, _p(CClusteredPatch), ctypes.c_size_t,
         _p(CMinedCluster), ctypes.c_size_t]),
    "dm_report_add_map": (
        _c_status, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, _p(ctypes.c_float), ctypes.c_uint32, ctypes.c_uint32]),
    "dm_report_add_image": (_c_status, [ctypes.c_void_p, ctypes.c_char_p, _p(CImageView)]),
    "dm_report_add_skipped": (_c_status, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]),
    "dm_report_write": (_c_status, [ctypes.c_void_p, ctypes.c_char_p]),
    "dm_report_free": (_c_status, [ctypes.c_void_p]),
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

# Where a wheel puts the library: inside this package, with an rpath to the torch package beside it.
_BUNDLED = Path(__file__).resolve().parent / "libdiffmine.so"


def library_path() -> str:
    """Where libdiffmine is loaded from: ``$DIFFMINE_LIB`` if set, else the copy inside this package
    (a wheel's), else what ``ctypes.util.find_library("diffmine")`` finds (a system install)."""
    explicit = os.environ.get("DIFFMINE_LIB")
    if explicit:
        if not Path(explicit).is_file():
            raise OSError(f"DIFFMINE_LIB={explicit!r} is not a file")
        return explicit
    if _BUNDLED.is_file():
        return str(_BUNDLED)
    found = ctypes.util.find_library("diffmine")
    if found:
        return found
    raise OSError(
        "libdiffmine not found: install the diffmine wheel (bash scripts/build_wheel.sh builds it), set "
        "DIFFMINE_LIB to the path of libdiffmine.so, or install the library where the dynamic linker finds it"
    )


def check_torch() -> None:
    """Raises ImportError, naming the torch version it needs, where the bundled library could not load
    its libtorch: torch missing, of another version, or installed in another folder than this package
    (the library finds libtorch through its rpath ``$ORIGIN/../torch/lib``). Without this the failure
    would be the dynamic loader's message about a missing ``libtorch_cpu.so`` or an undefined symbol.
    A library named by ``$DIFFMINE_LIB`` brings its own way to libtorch and is not checked."""
    try:
        from ._build import TORCH_LIBRARIES, TORCH_VERSION
    except ImportError:  # a source checkout: no bundled library
        return
    if os.environ.get("DIFFMINE_LIB"):
        return
    from importlib import metadata

    needed = f"torch=={TORCH_VERSION}"
    why = "the libtorch its libdiffmine.so was built against"
    try:
        found = metadata.version("torch")
    except metadata.PackageNotFoundError:
        raise ImportError(f"diffmine needs {needed} ({why}), and torch is not installed: pip install {needed}") from None
    if found.split("+")[0] != TORCH_VERSION:
        raise ImportError(f"diffmine needs {needed} ({why}), but torch {found} is installed: pip install {needed}")
    torch_lib = _BUNDLED.parent.parent / "torch" / "lib"
    missing = [name for name in TORCH_LIBRARIES if not (torch_lib / name).is_file()]
    if missing:
        raise ImportError(f"diffmine needs {needed} ({why}) with {', '.join(missing)} in {torch_lib}, where its "
                          f"libdiffmine.so looks for them; torch {found} is installed without them there (another "
                          "site-packages folder, or a build without CUDA)")


# --- logging -------------------------------------------------------------------------------------

logger = logging.getLogger("diffmine")

# DM_LOG_ERROR .. DM_LOG_TRACE and Python's levels; Python has no TRACE, so it gets the number below DEBUG.
TRACE = 5
_PYTHON_LEVEL = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: TRACE}


def _library_level(python_level: int) -> int:
    """The most verbose DM_LOG_* level that a logger at ``python_level`` shows."""
    shown = [dm for dm, py in _PYTHON_LEVEL.items() if py >= python_level]
    return max(shown) if shown else 1


def _forward_log(level: int, target: Optional[bytes], message: Optional[bytes], _user_data: Optional[int]) -> None:
    """The ``dm_log_fn``: one library event as a record of the "diffmine" logger, or of its child named
    after the Rust module ("diffmine.mining.miner"). Called from whichever thread the library logs on
    (ctypes takes the GIL); an exception must not reach the library's frames, so none leaves."""
    try:
        module = (target or b"").decode("utf-8", errors="replace").replace("::", ".")
        name = module if module == "diffmine" or module.startswith("diffmine.") else f"diffmine.{module}".rstrip(".")
        python_level = _PYTHON_LEVEL.get(level, logging.INFO)
        record_logger = logging.getLogger(name)
        if record_logger.isEnabledFor(python_level):
            record_logger.log(python_level, "%s", (message or b"").decode("utf-8", errors="replace"))
    except Exception:  # noqa: BLE001 - see above
        pass


# Kept for the life of the process: the library holds this function pointer.
_LOG_CALLBACK = LOG_FN(_forward_log)
_NO_LOG_CALLBACK = ctypes.cast(None, LOG_FN)


def set_log_level(level: int) -> None:
    """Sets the "diffmine" logger's level, and the library's: it sends events down to DEBUG always
    (``logging`` then filters them), and TRACE events (:data:`TRACE`, 5) only when the logger's level
    was at most TRACE when it was loaded or is set so here, as they can be many, each crossing into
    Python under the GIL."""
    logger.setLevel(level)
    _install_log_callback(lib())


def _install_log_callback(handle: ctypes.CDLL) -> None:
    """Forwards the library's events down to DEBUG, or TRACE if the logger shows it. A failure (another
    tracing subscriber already installed in this process by a Rust host) is a warning, not an error:
    the library works without its log."""
    max_level = _library_level(min(logger.getEffectiveLevel(), logging.DEBUG))
    status = handle.dm_log_set_callback(_LOG_CALLBACK, max_level, None)
    if status != Status.OK:
        message = handle.dm_last_error()
        logger.warning("the library's log is not forwarded: %s", message.decode("utf-8", errors="replace") if message else status)


def _stop_log_callback() -> None:
    """At exit: the library's threads must not call into an interpreter that is shutting down."""
    if _lib is not None:
        _lib.dm_log_set_callback(_NO_LOG_CALLBACK, 0, None)


atexit.register(_stop_log_callback)

# --- loading -------------------------------------------------------------------------------------

_lib: Optional[ctypes.CDLL] = None
_lock = threading.Lock()


def lib() -> ctypes.CDLL:
    """The loaded library with its prototypes declared and its log forwarded (loaded on first use)."""
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
            _install_log_callback(handle)
            _lib = handle
        return _lib


def last_error() -> str:
    """``dm_last_error()`` of this thread, decoded."""
    message = lib().dm_last_error()
    return message.decode("utf-8", errors="replace") if message else ""


def check(status: int) -> None:
    """Raises the :class:`Error` subclass of ``status`` with this thread's last error message unless
    ``status`` is DM_OK."""
    if status != Status.OK:
        raise error_for(status, last_error())
