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
    let (ours, theirs) = (shifted.unet_parameters().unwrap(), aligned.unet_parameters().unwrap());
    assert_eq!(ours.len(), theirs.len());
    for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
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
fn a_component_weight_file_is_not_taken_for_a_single_file_checkpoint() {
    // Single-file checkpoints (tests/models.rs) hold the whole pipeline under the original keys.
    let file = unet_weights(&pipeline("sd15_tiny"));
    let err = open_err(&file);
    assert!(matches!(err, Error::InvalidModel(_)));
    assert!(err.to_string().contains("not a Stable Diffusion single-file checkpoint"), "{err}");
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

/// Rewrites the JSON file `relative` of a pipeline folder with `edit` applied.
fn edit_json(dir: &Path, relative: &str, edit: fn(&mut serde_json::Value)) {
    let path = dir.join(relative);
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, value.to_string()).unwrap();
}

#[test]
fn configuration_values_out_of_their_domain_are_refused_at_open_naming_the_key() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 11] = [
        ("unet/config.json", |c| c["norm_eps"] = (-1.0).into(), "norm_eps"),
        ("unet/config.json", |c| c["attention_head_dim"] = 0.into(), "attention_head_dim"),
        ("unet/config.json", |c| c["norm_num_groups"] = 0.into(), "norm_num_groups"),
        (
            "unet/config.json",
            |c| {
                for key in ["block_out_channels", "down_block_types", "up_block_types"] {
                    c[key] = serde_json::json!([]);
                }
            },
            "block_out_channels",
        ),
        (
            "vae/config.json",
            |c| {
                for key in ["block_out_channels", "down_block_types", "up_block_types"] {
                    c[key] = serde_json::json!([]);
                }
            },
            "block_out_channels",
        ),
        ("vae/config.json", |c| c["scaling_factor"] = 0.0.into(), "scaling_factor"),
        ("text_encoder/config.json", |c| c["layer_norm_eps"] = 0.0.into(), "layer_norm_eps"),
        ("scheduler/scheduler_config.json", |c| c["beta_end"] = 1.5.into(), "beta_end"),
        ("scheduler/scheduler_config.json", |c| c["beta_start"] = 0.0.into(), "beta_start"),
        ("scheduler/scheduler_config.json", |c| c["num_train_timesteps"] = (1u64 << 40).into(), "num_train_timesteps"),
        ("scheduler/scheduler_config.json", |c| c["trained_betas"] = serde_json::json!([0.5, 0.5]), "trained_betas"),
    ];
    for (file, edit, key) in cases {
        let dir = scratch_copy("sd15_tiny");
        edit_json(dir.path(), file, edit);
        let err = open_err(dir.path());
        assert!(matches!(err, Error::InvalidModel(_)) && err.to_string().contains(key), "{file} {key}: {err}");
        let (status, message) = c_open(dir.path());
        assert_eq!(status, dm_status::DM_ERR_INVALID_MODEL, "{file} {key}: {message}");
    }
}

#[test]
fn an_empty_vocabulary_is_refused_at_open() {
    let dir = scratch_copy("sd15_tiny");
    std::fs::write(dir.path().join("tokenizer/vocab.json"), "{}").unwrap();
    std::fs::write(dir.path().join("tokenizer/merges.txt"), "#version: 0.2\n").unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, Error::InvalidModel(_)) && err.to_string().contains("vocabulary is empty"), "{err}");
}

/// A typicality map through the C ABI of a 32 × 32 grey image: its status.
fn c_typicality(model: *const ffi::dm_model, samples: u32, batch: u32, progress: ffi::dm_progress_fn) -> dm_status {
    let pixels = vec![128u8; 32 * 32 * 3];
    let view = ffi::dm_image_view {
        data: pixels.as_ptr().cast(),
        data_len: pixels.len(),
        width: 32,
        height: 32,
        channels: 3,
        pixel_type: ffi::DM_PIXEL_U8,
        stride: 96,
    };
    let mut options = std::mem::MaybeUninit::<ffi::dm_typicality_options>::uninit();
    // SAFETY: `options` is writable; filled before it is read.
    let mut options = unsafe {
        assert_eq!(ffi::dm_typicality_options_default(options.as_mut_ptr()), dm_status::DM_OK);
        options.assume_init()
    };
    (options.samples, options.batch) = (samples, batch);
    let mut map = vec![0f32; 32 * 32];
    let (prompt, null) = (CString::new("Chest X-Ray with Effusion.").unwrap(), CString::new("").unwrap());
    // SAFETY: valid handle, view, strings, options and map buffer; no losses buffer.
    unsafe {
        ffi::dm_typicality_map(
            model,
            &view,
            prompt.as_ptr(),
            null.as_ptr(),
            &options,
            progress,
            std::ptr::null_mut(),
            map.as_mut_ptr(),
            map.len(),
            std::ptr::null_mut(),
            0,
        )
    }
}

#[test]
fn a_nan_weight_or_pixel_is_invalid_data_naming_where_it_came_from_not_a_nan_map() {
    let dir = scratch_copy("sd15_tiny");
    edit_unet_tensors(dir.path(), |tensors| {
        let (_, bias) = tensors.iter_mut().find(|(name, _)| name == "conv_in.bias").unwrap();
        *bias = bias.copy().index_fill(0, &Tensor::from_slice(&[0i64]), f64::NAN);
    });
    let model = c_open_model(dir.path());
    assert_eq!(c_typicality(model, 2, 2, None), dm_status::DM_ERR_INVALID_DATA, "{}", last_error());
    assert!(last_error().contains("UNet"), "{}", last_error());
    ffi::dm_model_free(model);

    let model = open(&pipeline("sd15_tiny")).unwrap();
    let image = Tensor::zeros([1, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let _ = image.get(0).get(1).get(5).get(7).fill_(f64::NAN);
    let options = diffmine::typicality::TypicalityOptions { samples: 2, batch: 2, ..Default::default() };
    match diffmine::typicality::typicality(&model, &image, "a", "", &options, &mut |_, _| true) {
        Err(Error::InvalidData(message)) => assert!(message.contains("image") && message.contains("NaN"), "{message}"),
        Err(other) => panic!("expected invalid data, got {other}"),
        Ok(_) => panic!("a map of an image with a NaN pixel"),
    }
}

/// `dm_patches_select` on a 64 × 64 map with `bad` at one pixel: its status.
fn c_patches_with(bad: f32) -> dm_status {
    let mut map: Vec<f32> = (0..64 * 64).map(|i| ((i % 64) as f32 * 0.37).sin()).collect();
    map[20 * 64 + 30] = bad;
    let mut boxes = vec![ffi::dm_box { x: 0, y: 0, size: 0, score: 0.0 }; 4];
    let mut count = 0usize;
    // SAFETY: the map, boxes and count are valid for their lengths.
    unsafe { ffi::dm_patches_select(map.as_ptr(), map.len(), 64, 64, 16, 4, boxes.as_mut_ptr(), boxes.len(), &mut count) }
}

#[test]
fn a_map_with_a_nan_or_an_infinity_gives_no_boxes_but_invalid_data_naming_the_pixel() {
    assert_eq!(c_patches_with(0.5), dm_status::DM_OK);
    for bad in [f32::NAN, f32::INFINITY] {
        assert_eq!(c_patches_with(bad), dm_status::DM_ERR_INVALID_DATA, "{bad}: {}", last_error());
        assert!(last_error().contains("row 20, column 30"), "{}", last_error());
    }
}

/// Set in a child process of this test binary that runs a test's body under limits.
const LIMITED_CHILD: &str = "DIFFMINE_LIMITED_CHILD";

/// The address space of the limited child: a few GiB above what libtorch maps at start.
const CHILD_ADDRESS_SPACE: u64 = 8 << 30;

/// Runs this binary's test `name` again in a child process under `prlimit --as` and a time limit, with
/// [`LIMITED_CHILD`] set so that the body runs there: what would exhaust the machine's memory before a
/// fix only fails the child.
fn run_limited(name: &str, seconds: u32) -> std::process::Output {
    std::process::Command::new("timeout")
        .args([seconds.to_string(), "prlimit".into(), format!("--as={CHILD_ADDRESS_SPACE}"), "--".into()])
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(LIMITED_CHILD, "1")
        .output()
        .expect("run timeout and prlimit")
}

unsafe extern "C" fn cancel_at_once(_done: u64, _total: u64, _value: f64, _user_data: *mut std::ffi::c_void) -> i32 {
    1
}

#[test]
fn huge_counts_are_refused_before_anything_is_allocated_and_memory_stays_one_batch() {
    if std::env::var_os(LIMITED_CHILD).is_none() {
        let output = run_limited("huge_counts_are_refused_before_anything_is_allocated_and_memory_stays_one_batch", 300);
        let show = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        assert!(output.status.success(), "the limited child failed ({}):\n{}\n{}", output.status, show(&output.stdout), show(&output.stderr));
        return;
    }
    let model = c_open_model(&pipeline("sd15_tiny"));
    for (samples, batch) in [(u32::MAX, u32::MAX), (1 << 31, 4)] {
        assert_eq!(c_typicality(model, samples, batch, None), dm_status::DM_ERR_INVALID_ARGUMENT, "{samples} samples: {}", last_error());
        assert!(last_error().contains("samples"), "{}", last_error());
    }
    let most = ffi::DM_TYPICALITY_MAX_SAMPLES;
    // A batch of a million samples needs more than the child may hold: refused before it is allocated.
    assert_eq!(c_typicality(model, most, most, None), dm_status::DM_ERR_OUT_OF_MEMORY, "{}", last_error());
    // In small batches memory stays one batch's whatever N, and the run stops at the first callback.
    assert_eq!(c_typicality(model, most, 4, Some(cancel_at_once)), dm_status::DM_ERR_CANCELLED, "{}", last_error());
    assert_eq!(c_typicality(model, 2, 2, None), dm_status::DM_OK, "{}", last_error());

    let template = CString::new("A photo of {label}.").unwrap();
    let mut options = std::mem::MaybeUninit::<ffi::dm_miner_options>::uninit();
    // SAFETY: `options` is writable; filled before it is read.
    let mut options = unsafe {
        assert_eq!(ffi::dm_miner_options_default(options.as_mut_ptr()), dm_status::DM_OK);
        options.assume_init()
    };
    (options.prompt_template, options.samples) = (template.as_ptr(), 1 << 31);
    let mut miner = std::ptr::null_mut();
    // SAFETY: valid handle, options whose strings live, writable out pointer.
    assert_eq!(unsafe { ffi::dm_miner_create(model, &options, &mut miner) }, dm_status::DM_ERR_INVALID_ARGUMENT, "{}", last_error());
    assert!(last_error().contains("samples"), "{}", last_error());
    // A DIFT ensemble of 2^32 − 1 members, run as one batch: refused when its size is known.
    (options.samples, options.batch, options.patch_size, options.dift_ensemble) = (2, 2, 16, u32::MAX);
    // SAFETY: as above.
    assert_eq!(unsafe { ffi::dm_miner_create(model, &options, &mut miner) }, dm_status::DM_OK, "{}", last_error());
    let pixels = vec![128u8; 32 * 32 * 3];
    let view = ffi::dm_image_view {
        data: pixels.as_ptr().cast(),
        data_len: pixels.len(),
        width: 32,
        height: 32,
        channels: 3,
        pixel_type: ffi::DM_PIXEL_U8,
        stride: 96,
    };
    let label = CString::new("cat").unwrap();
    // SAFETY: live miner, valid view and label; NULL name (generated), no progress callback.
    unsafe {
        assert_eq!(ffi::dm_miner_add_image(miner, &view, std::ptr::null(), label.as_ptr()), dm_status::DM_OK, "{}", last_error());
        assert_eq!(ffi::dm_miner_run(miner, None, std::ptr::null_mut()), dm_status::DM_ERR_OUT_OF_MEMORY, "{}", last_error());
    }
    assert!(last_error().contains("DIFT"), "{}", last_error());
    assert_eq!(ffi::dm_miner_free(miner), dm_status::DM_OK);

    // As many boxes as a u32 can ask for: as many as the map has room for.
    let map: Vec<f32> = (0..64 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut boxes = vec![ffi::dm_box { x: 0, y: 0, size: 0, score: 0.0 }; 64];
    let mut count = 0usize;
    // SAFETY: the map, boxes and count are valid for their lengths.
    let status = unsafe { ffi::dm_patches_select(map.as_ptr(), map.len(), 64, 64, 16, u32::MAX, boxes.as_mut_ptr(), boxes.len(), &mut count) };
    assert_eq!(status, dm_status::DM_OK, "{}", last_error());
    assert!((1..=16).contains(&count), "{count} boxes");
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
