//! Bad input gets an error that names the problem, through the safe API and the C ABI alike; nothing
//! panics. Each test breaks a copy of a fixture pipeline in its own way.
mod common;

use std::ffi::{CStr, CString};
use std::path::Path;

use common::{pipeline, scratch_copy};
use diffmine::ffi::{self, dm_status};
use diffmine::model::{parse_device, ModelOptions, StableDiffusion};
use diffmine::Error;
use tch::Tensor;

fn open(path: &Path) -> Result<StableDiffusion, Error> {
    StableDiffusion::open(path, &ModelOptions::default())
}

fn open_err(path: &Path) -> Error {
    match open(path) {
        Ok(_) => panic!("{} opened but should not", path.display()),
        Err(e) => e,
    }
}

/// Opens through the C ABI and returns the status and last-error message.
fn c_open(path: &Path) -> (dm_status, String) {
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let mut model = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated path, NULL options (defaults), valid out pointer.
    let status = unsafe { ffi::dm_model_open(c_path.as_ptr(), std::ptr::null(), &mut model) };
    if status == dm_status::DM_OK {
        ffi::dm_model_free(model);
    }
    (status, last_error())
}

fn last_error() -> String {
    // SAFETY: dm_last_error returns a valid NUL-terminated thread-local string.
    unsafe { CStr::from_ptr(ffi::dm_last_error()) }.to_string_lossy().into_owned()
}

fn unet_weights(dir: &Path) -> std::path::PathBuf {
    dir.join("unet/diffusion_pytorch_model.safetensors")
}

/// Rewrites the UNet weights with `edit` applied to the list of named tensors.
fn edit_unet_tensors(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let path = unet_weights(dir);
    let mut tensors = Tensor::read_safetensors(&path).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, &path).unwrap();
}

#[test]
fn a_folder_that_does_not_exist_is_an_io_error_naming_it() {
    let missing = Path::new("/nonexistent/diffmine-model");
    assert!(matches!(open_err(missing), Error::Io { .. }));
    let (status, message) = c_open(missing);
    assert_eq!(status, dm_status::DM_ERR_IO);
    assert!(message.contains("/nonexistent/diffmine-model"), "{message}");
}

#[test]
fn a_missing_component_folder_is_named() {
    let dir = scratch_copy("sd15_tiny");
    std::fs::remove_dir_all(dir.path().join("vae")).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, Error::InvalidModel(_)));
    assert!(err.to_string().contains("vae"), "{err}");
    assert_eq!(c_open(dir.path()).0, dm_status::DM_ERR_INVALID_MODEL);
}

#[test]
fn a_missing_weight_file_says_which_file_is_expected() {
    let dir = scratch_copy("sd15_tiny");
    std::fs::remove_file(unet_weights(dir.path())).unwrap();
    std::fs::remove_file(dir.path().join("unet/diffusion_pytorch_model.fp16.safetensors")).unwrap();
    let err = open_err(dir.path()).to_string();
    assert!(err.contains("missing weight file") && err.contains("diffusion_pytorch_model.safetensors"), "{err}");
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = scratch_copy("sd15_tiny");
    edit_unet_tensors(dir.path(), |t| t.retain(|(name, _)| name != "conv_out.bias"));
    match open_err(dir.path()) {
        Error::MissingTensor { name, .. } => assert_eq!(name, "conv_out.bias"),
        other => panic!("expected a missing tensor, got {other}"),
    }
    let (status, message) = c_open(dir.path());
    assert_eq!(status, dm_status::DM_ERR_MISSING_TENSOR);
    assert!(message.contains("conv_out.bias"), "{message}");
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_both_shapes() {
    let dir = scratch_copy("sd15_tiny");
    edit_unet_tensors(dir.path(), |tensors| {
        for (name, t) in tensors.iter_mut() {
            if name == "conv_out.bias" {
                *t = Tensor::zeros([5], (tch::Kind::Float, tch::Device::Cpu));
            }
        }
    });
    let err = open_err(dir.path());
    assert!(matches!(&err, Error::ShapeMismatch { name, expected, found } if name == "conv_out.bias" && expected == &[4] && found == &[5]));
    let message = err.to_string();
    assert!(message.contains("[5]") && message.contains("[4]"), "{message}");
    assert_eq!(c_open(dir.path()).0, dm_status::DM_ERR_SHAPE_MISMATCH);
}

#[test]
fn a_truncated_safetensors_file_is_reported_as_corrupt() {
    let dir = scratch_copy("sd15_tiny");
    let path = unet_weights(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, Error::CorruptWeights(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(c_open(dir.path()).0, dm_status::DM_ERR_CORRUPT_WEIGHTS);
}

#[test]
fn a_garbage_safetensors_file_is_reported_as_corrupt() {
    let dir = scratch_copy("sd15_tiny");
    std::fs::write(unet_weights(dir.path()), b"this is not a safetensors file at all").unwrap();
    assert!(matches!(open_err(dir.path()), Error::CorruptWeights(_)));
}

/// Rewrites the UNet file's safetensors header with `edit` applied, padded with spaces (JSON allows them)
/// so that the data bytes, unchanged, start `misalignment` bytes past a multiple of 8.
fn edit_unet_header(dir: &Path, misalignment: usize, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = unet_weights(dir);
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    while text.len() % 8 != misalignment {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + header_len..]);
    std::fs::write(&path, out).unwrap();
}

#[test]
fn tensors_sharing_bytes_are_reported_as_corrupt() {
    let dir = scratch_copy("sd15_tiny");
    edit_unet_header(dir.path(), 0, |header| {
        let conv_in = header["conv_in.bias"].clone();
        let conv_out = header.get_mut("conv_out.bias").unwrap();
        conv_out["data_offsets"] = conv_in["data_offsets"].clone();
        conv_out["shape"] = conv_in["shape"].clone();
    });
    // conv_out.bias now has conv_in.bias's shape, but the byte ranges are checked before any shape.
    let err = open_err(dir.path());
    assert!(matches!(err, Error::CorruptWeights(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("conv_in.bias") && message.contains("conv_out.bias") && message.contains("share bytes"), "{message}");
}

#[test]
fn weights_not_aligned_for_their_dtype_load_through_a_copy_with_the_same_values() {
    // Data starting one byte past 8-byte alignment: no f32 tensor can be a view.
    let dir = scratch_copy("sd15_tiny");
    edit_unet_header(dir.path(), 1, |_| {});
    let shifted = open(dir.path()).unwrap();
    let aligned = open(&pipeline("sd15_tiny")).unwrap();
    let (ours, theirs) = (&shifted.unet_weights().parameters, &aligned.unet_weights().parameters);
    assert_eq!(ours.len(), theirs.len());
    for ((name, a), (_, b)) in ours.iter().zip(theirs) {
        assert!(a.equal(b), "{name} differs when read from a shifted file");
    }
}

#[test]
fn pickle_checkpoints_are_refused_with_the_supported_format() {
    let dir = scratch_copy("sd15_tiny");
    let unet = dir.path().join("unet");
    std::fs::rename(unet.join("diffusion_pytorch_model.safetensors"), unet.join("diffusion_pytorch_model.bin")).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, Error::Unsupported(_)));
    let message = err.to_string();
    assert!(message.contains("diffusion_pytorch_model.bin") && message.contains("safetensors"), "{message}");
    assert_eq!(c_open(dir.path()).0, dm_status::DM_ERR_UNSUPPORTED);
}

#[test]
fn a_single_file_checkpoint_is_refused_with_the_supported_format() {
    let file = unet_weights(&pipeline("sd15_tiny"));
    let err = open_err(&file);
    assert!(matches!(err, Error::Unsupported(_)));
    assert!(err.to_string().contains("single-file"), "{err}");
}

#[test]
fn an_unknown_block_type_in_a_config_is_named() {
    let dir = scratch_copy("sd15_tiny");
    let config_path = dir.path().join("unet/config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["down_block_types"][0] = "FancyDownBlock2D".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, Error::Unsupported(_)));
    assert!(err.to_string().contains("FancyDownBlock2D"), "{err}");
}

#[test]
fn unknown_devices_and_absent_cuda_are_device_errors() {
    assert!(matches!(parse_device("tpu"), Err(Error::Device(_))));
    if tch::Cuda::device_count() == 0 {
        let err = parse_device("cuda").unwrap_err();
        assert!(matches!(err, Error::Device(_)));
        assert!(err.to_string().contains("CUDA is not available"), "{err}");
    }
}

#[test]
fn wrong_input_shapes_are_invalid_arguments_not_panics() {
    let model = open(&pipeline("sd15_tiny")).unwrap();
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let latents = Tensor::zeros([1, 3, 8, 8], opts);
    let context = Tensor::zeros([1, 77, 32], opts);
    let err = model.predict_noise(&latents, &Tensor::from_slice(&[10i64]), &context).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("(B, 4, h, w)"), "{err}");
    let latents = Tensor::zeros([1, 4, 8, 8], opts);
    let err = model.predict_noise(&latents, &Tensor::from_slice(&[1000i64]), &context).unwrap_err();
    assert!(err.to_string().contains("[0, 999]"), "{err}");
    let err = model.predict_noise(&latents, &Tensor::from_slice(&[1i64]), &Tensor::zeros([1, 77, 31], opts)).unwrap_err();
    assert!(err.to_string().contains("text embeddings"), "{err}");
    let err = model.encode(&Tensor::zeros([1, 2, 16, 16], opts)).err().unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

fn c_open_model(path: &Path) -> *mut ffi::dm_model {
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let mut model = std::ptr::null_mut();
    // SAFETY: valid path, NULL options, valid out pointer.
    assert_eq!(unsafe { ffi::dm_model_open(c_path.as_ptr(), std::ptr::null(), &mut model) }, dm_status::DM_OK);
    model
}

fn info_with_size(model: *const ffi::dm_model, struct_size: usize) -> (dm_status, ffi::dm_model_info) {
    // SAFETY: an all-zero dm_model_info is a valid value (integers and a double).
    let mut info: ffi::dm_model_info = unsafe { std::mem::zeroed() };
    info.struct_size = struct_size;
    // SAFETY: `info` is a valid, writable dm_model_info.
    let status = unsafe { ffi::dm_model_get_info(model, &mut info) };
    (status, info)
}

#[test]
fn a_freed_handle_stays_invalid_even_after_new_models_are_opened() {
    let dir = pipeline("sd15_tiny");
    let first = c_open_model(&dir);
    assert_eq!(ffi::dm_model_free(first), dm_status::DM_OK);
    let reopened: Vec<_> = (0..20).map(|_| c_open_model(&dir)).collect();
    assert!(!reopened.contains(&first), "handles are never reused");
    assert_eq!(info_with_size(first, std::mem::size_of::<ffi::dm_model_info>()).0, dm_status::DM_ERR_INVALID_HANDLE);
    assert_eq!(ffi::dm_model_free(first), dm_status::DM_ERR_INVALID_HANDLE, "double free is reported");
    for model in reopened {
        assert_eq!(ffi::dm_model_free(model), dm_status::DM_OK);
    }
}

#[test]
fn model_info_respects_the_callers_struct_size() {
    let model = c_open_model(&pipeline("sd15_tiny"));
    let full = std::mem::size_of::<ffi::dm_model_info>();
    assert_eq!(info_with_size(model, 12).0, dm_status::DM_ERR_INVALID_ARGUMENT);
    let (status, info) = info_with_size(model, full);
    assert_eq!(status, dm_status::DM_OK);
    assert_eq!((info.latent_channels, info.max_tokens, info.text_embedding_dim, info.train_steps), (4, 77, 32, 1000));
    assert_eq!(info.struct_size, full);
    ffi::dm_model_free(model);
}

#[test]
fn overflowing_or_too_small_images_are_invalid_arguments() {
    let model = c_open_model(&pipeline("sd15_tiny"));
    let pixels = [0u8; 64];
    let mut out = [0f32; 16];
    let view = |width, height, stride| ffi::dm_image_view {
        data: pixels.as_ptr().cast(),
        data_len: pixels.len(),
        width,
        height,
        channels: 3,
        pixel_type: ffi::DM_PIXEL_U8,
        stride,
    };
    for (image, what) in [(view(1, 3, 1usize << 63), "stride overflow"), (view(1, 1, 3), "1×1 image")] {
        // SAFETY: the view points at `pixels` with its true length; `out` is writable.
        let status = unsafe { ffi::dm_model_encode(model, &image, out.as_mut_ptr(), out.len()) };
        assert_eq!(status, dm_status::DM_ERR_INVALID_ARGUMENT, "{what}: {}", last_error());
    }
    let (mut h, mut w) = (0u32, 0u32);
    // SAFETY: valid model handle and out pointers.
    assert_eq!(unsafe { ffi::dm_model_latent_size(model, 1, 1, &mut h, &mut w) }, dm_status::DM_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("too small"), "{}", last_error());
    ffi::dm_model_free(model);
}

/// An empty model path says so, rather than naming nothing before ": no such model folder".
#[test]
fn an_empty_model_path_is_named_as_empty() {
    let err = open_err(Path::new(""));
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("path is empty")), "{err:?}");
    let (status, message) = c_open(Path::new(""));
    assert_eq!(status, dm_status::DM_ERR_INVALID_ARGUMENT);
    assert!(message.contains("path is empty"), "{message}");
}

/// On DM_ERR_BUFFER_TOO_SMALL a function with an out-count or out-needed parameter writes the size
/// it needs there, so the caller can size a second try: token ids, typical patches, miner names.
#[test]
fn a_buffer_too_small_gives_the_needed_size_in_the_out_count() {
    let model = common::CModel::open(&pipeline("sd15_tiny"));
    let text = CString::new("a photo").unwrap();
    let mut ids = [0i64; 2];
    let mut count = 0usize;
    // SAFETY: valid handle and string; `ids` holds 2 elements.
    let status = unsafe { ffi::dm_model_tokenize(model.0, text.as_ptr(), ids.as_mut_ptr(), ids.len(), &mut count) };
    assert_eq!(status, dm_status::DM_ERR_BUFFER_TOO_SMALL);
    let needed = count;
    assert!(needed > 2, "the padded token count is written: {needed}");
    let mut ids = vec![0i64; needed];
    // SAFETY: as above, with a buffer of the size given.
    let status = unsafe { ffi::dm_model_tokenize(model.0, text.as_ptr(), ids.as_mut_ptr(), ids.len(), &mut count) };
    assert_eq!((status, count), (dm_status::DM_OK, needed));

    let map: Vec<f32> = (0..64 * 64).map(|i| ((i * 7919) % 64) as f32).collect();
    let mut boxes = [ffi::dm_box { x: 0, y: 0, size: 0, score: 0.0 }; 1];
    let mut count = 0usize;
    // SAFETY: `map` holds 64 × 64 floats; `boxes` holds 1 box.
    let status = unsafe { ffi::dm_patches_select(map.as_ptr(), map.len(), 64, 64, 8, 4, boxes.as_mut_ptr(), boxes.len(), &mut count) };
    assert_eq!((status, count), (dm_status::DM_ERR_BUFFER_TOO_SMALL, 4), "{}", last_error());
}

/// A resize target whose map could not even be addressed is refused, not answered with its size.
#[test]
fn a_map_size_beyond_what_can_be_computed_is_refused() {
    let pixels = [0u8; 4 * 2];
    let view =
        ffi::dm_image_view { data: pixels.as_ptr().cast(), data_len: pixels.len(), width: 4, height: 2, channels: 1, pixel_type: ffi::DM_PIXEL_U8, stride: 4 };
    // SAFETY: zeroed, then filled by the library.
    let mut options: ffi::dm_typicality_options = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    assert_eq!(unsafe { ffi::dm_typicality_options_default(&mut options) }, dm_status::DM_OK);
    let (mut h, mut w) = (0u32, 0u32);
    for (side, expected) in [(u32::MAX, dm_status::DM_ERR_INVALID_ARGUMENT), (1 << 30, dm_status::DM_ERR_INVALID_ARGUMENT), (64, dm_status::DM_OK)] {
        options.resize_short_side = side;
        // SAFETY: valid view, options and outputs.
        let status = unsafe { ffi::dm_typicality_map_size(&view, &options, &mut h, &mut w) };
        assert_eq!(status, expected, "{side}: {h}×{w}");
    }
    assert_eq!((h, w), (64, 128));
}
