//! Translation and text-to-image sampling through the C ABI (`dm_model_translate`,
//! `dm_model_generate`) on the Plug-and-Play fixture (tests/reference/translate_reference.py): the bytes
//! equal the safe API's result rendered the same way, bad input gets a status and a message that says
//! what is wrong, and the progress callback counts and cancels.
mod common;

use std::ffi::{c_char, c_void, CString};
use std::ptr::{null, null_mut};

use common::{c_last_error, CModel};
use diffmine::ffi::{self, dm_generate_options, dm_image_view, dm_status, dm_translate_options, DM_PIXEL_U8};
use diffmine::image::{to_rgb8, ImageView, PixelType};
use diffmine::model::{ModelOptions, StableDiffusion};
use diffmine::translate::{self, GenerateOptions, TranslateOptions};
use tch::Tensor;

const SOURCE: &str = "A car from the 1950s.";
const TARGETS: [&str; 2] = ["A car from the 2020s.", "a photo of a cat"];

/// The fixture's 16 × 24 source image as packed RGB8.
struct Image {
    pixels: Vec<u8>,
    height: usize,
    width: usize,
}

impl Image {
    fn fixture() -> Self {
        let tensors: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(common::translate_fixture_dir().join("reference.safetensors")).unwrap().into_iter().collect();
        let image = &tensors["pnp.image"];
        let (_, _, h, w) = image.size4().unwrap();
        Image { pixels: to_rgb8(image).unwrap(), height: h as usize, width: w as usize }
    }

    fn view(&self) -> dm_image_view {
        dm_image_view {
            data: self.pixels.as_ptr() as *const c_void,
            data_len: self.pixels.len(),
            width: self.width as u32,
            height: self.height as u32,
            channels: 3,
            pixel_type: DM_PIXEL_U8,
            stride: self.width * 3,
        }
    }

    /// The model input the C call makes of the same pixels.
    fn tensor(&self) -> Tensor {
        let view = ImageView { data: &self.pixels, width: self.width, height: self.height, channels: 3, stride: self.width * 3, pixel: PixelType::U8 };
        view.to_model_input().unwrap()
    }

    fn rgb_len(&self, count: usize) -> usize {
        count * self.height * self.width * 3
    }
}

/// Few steps, so each call takes well under a second; equal step counts keep every sampling
/// timestep among the inversion's.
fn fast_options() -> dm_translate_options {
    let mut options = std::mem::MaybeUninit::<dm_translate_options>::uninit();
    // SAFETY: a valid out pointer; the call fills the whole struct.
    assert_eq!(unsafe { ffi::dm_translate_options_default(options.as_mut_ptr()) }, dm_status::DM_OK);
    // SAFETY: initialised by the call above.
    let mut options = unsafe { options.assume_init() };
    options.steps = 10;
    options.inversion_steps = 10;
    options
}

fn c_strings(texts: &[&str]) -> (Vec<CString>, Vec<*const c_char>) {
    let owned: Vec<CString> = texts.iter().map(|t| CString::new(*t).unwrap()).collect();
    let pointers = owned.iter().map(|c| c.as_ptr()).collect();
    (owned, pointers)
}

/// What a `dm_model_translate` call is given, with defaults a case changes one at a time.
struct TranslateCall<'a> {
    model: &'a CModel,
    image: &'a Image,
    targets: Vec<*const c_char>,
    options: dm_translate_options,
    out_len: usize,
    progress: ffi::dm_progress_fn,
    user_data: *mut c_void,
}

impl<'a> TranslateCall<'a> {
    fn new(model: &'a CModel, image: &'a Image, targets: &[*const c_char]) -> Self {
        TranslateCall {
            model,
            image,
            targets: targets.to_vec(),
            options: fast_options(),
            out_len: image.rgb_len(targets.len()),
            progress: None,
            user_data: null_mut(),
        }
    }

    /// Runs the call; returns its status, the images buffer and the reconstruction buffer, both
    /// pre-filled with 7 so a write on failure would show.
    fn run(&self) -> (dm_status, Vec<u8>, Vec<u8>) {
        let source = CString::new(SOURCE).unwrap();
        let view = self.image.view();
        let mut images = vec![7u8; self.out_len];
        let mut reconstruction = vec![7u8; self.image.rgb_len(1)];
        let targets = if self.targets.is_empty() { null() } else { self.targets.as_ptr() };
        // SAFETY: every pointer is valid for the length passed with it; the strings outlive the call.
        let status = unsafe {
            ffi::dm_model_translate(
                self.model.0,
                &view,
                source.as_ptr(),
                targets,
                self.targets.len(),
                &self.options,
                self.progress,
                self.user_data,
                images.as_mut_ptr(),
                images.len(),
                reconstruction.as_mut_ptr(),
                reconstruction.len(),
            )
        };
        (status, images, reconstruction)
    }
}

/// One change to a default call.
type Edit = fn(&mut TranslateCall);

fn packed_rgb(images: &Tensor) -> Vec<u8> {
    (0..images.size()[0]).flat_map(|i| to_rgb8(&images.narrow(0, i, 1)).unwrap()).collect()
}

#[test]
fn c_translation_equals_the_safe_api_byte_for_byte() {
    let (model, image) = (CModel::open(common::translate_fixture_dir()), Image::fixture());
    let (_strings, targets) = c_strings(&TARGETS);
    let (status, images, reconstruction) = TranslateCall::new(&model, &image, &targets).run();
    assert_eq!(status, dm_status::DM_OK, "{}", c_last_error());

    let safe = StableDiffusion::open(common::translate_fixture_dir(), &ModelOptions::default()).unwrap();
    let options = TranslateOptions { steps: 10, inversion_steps: 10, ..TranslateOptions::default() };
    let expected = translate::translate(&safe, &image.tensor(), SOURCE, &TARGETS, &options, &mut |_, _| true).unwrap();
    assert_eq!(images, packed_rgb(&expected.images), "translations");
    assert_eq!(reconstruction, packed_rgb(&expected.reconstruction), "reconstruction");
    assert_ne!(images[..image.rgb_len(1)], images[image.rgb_len(1)..], "two targets gave the same image");
}

#[test]
fn the_reconstruction_is_optional() {
    let (model, image) = (CModel::open(common::translate_fixture_dir()), Image::fixture());
    let (_strings, targets) = c_strings(&TARGETS[..1]);
    let source = CString::new(SOURCE).unwrap();
    let mut options = fast_options();
    options.steps = 2;
    options.inversion_steps = 2;
    let mut images = vec![0u8; image.rgb_len(1)];
    // SAFETY: valid pointers for their lengths; NULL reconstruction with length 0.
    let status = unsafe {
        ffi::dm_model_translate(
            model.0,
            &image.view(),
            source.as_ptr(),
            targets.as_ptr(),
            1,
            &options,
            None,
            null_mut(),
            images.as_mut_ptr(),
            images.len(),
            null_mut(),
            0,
        )
    };
    assert_eq!(status, dm_status::DM_OK, "{}", c_last_error());
}

/// Records each call's (done, total, value is NaN) in the `Vec` behind `user_data` and cancels at the
/// third. It must not panic: a panic cannot unwind out of an `extern "C"` function.
unsafe extern "C" fn cancel_at_third(done: u64, total: u64, value: f64, user_data: *mut c_void) -> i32 {
    // SAFETY: the test passes a pointer to its own Vec, not otherwise used during the call.
    let calls = unsafe { &mut *(user_data as *mut Vec<(u64, u64, bool)>) };
    calls.push((done, total, value.is_nan()));
    i32::from(done == 3)
}

#[test]
fn a_non_zero_progress_return_cancels_and_the_model_stays_usable() {
    let (model, image) = (CModel::open(common::translate_fixture_dir()), Image::fixture());
    let (_strings, targets) = c_strings(&TARGETS[..1]);
    let mut calls: Vec<(u64, u64, bool)> = Vec::new();
    let mut call = TranslateCall::new(&model, &image, &targets);
    call.progress = Some(cancel_at_third);
    call.user_data = &mut calls as *mut Vec<(u64, u64, bool)> as *mut c_void;
    let (status, images, reconstruction) = call.run();
    assert_eq!(status, dm_status::DM_ERR_CANCELLED, "{}", c_last_error());
    // 10 inversion + 10 sampling steps, one call after each; the value is NaN (there is no loss).
    assert_eq!(calls, (1..=3).map(|d| (d, 20, true)).collect::<Vec<_>>());
    assert!(images.iter().chain(&reconstruction).all(|&b| b == 7), "outputs written on failure");

    call.progress = None;
    assert_eq!(call.run().0, dm_status::DM_OK, "{}", c_last_error());
}

#[test]
fn bad_translate_input_gets_a_status_and_a_message_that_says_what_is_wrong() {
    let (model, image) = (CModel::open(common::translate_fixture_dir()), Image::fixture());
    let (_strings, targets) = c_strings(&TARGETS);
    let with = |edit: Edit| {
        let mut call = TranslateCall::new(&model, &image, &targets);
        edit(&mut call);
        let (status, images, reconstruction) = call.run();
        assert!(images.iter().chain(&reconstruction).all(|&b| b == 7), "outputs written on failure");
        (status, c_last_error())
    };
    use dm_status::*;
    let needed = image.rgb_len(2).to_string();
    let cases: [(&str, Edit, dm_status, &str); 12] = [
        ("no targets", |c: &mut TranslateCall| c.targets.clear(), DM_ERR_INVALID_ARGUMENT, "no target prompts"),
        ("a NULL target", |c: &mut TranslateCall| c.targets[1] = null(), DM_ERR_INVALID_ARGUMENT, "`target_prompts[1]` is NULL"),
        ("negative guidance", |c: &mut TranslateCall| c.options.guidance = -1.0, DM_ERR_INVALID_ARGUMENT, "guidance"),
        ("NaN guidance", |c: &mut TranslateCall| c.options.guidance = f64::NAN, DM_ERR_INVALID_ARGUMENT, "guidance"),
        ("resnet fraction > 1", |c: &mut TranslateCall| c.options.resnet_injection = 1.5, DM_ERR_INVALID_ARGUMENT, "resnet_injection"),
        ("attention fraction < 0", |c: &mut TranslateCall| c.options.attention_injection = -0.1, DM_ERR_INVALID_ARGUMENT, "attention_injection"),
        ("zero steps", |c: &mut TranslateCall| c.options.steps = 0, DM_ERR_INVALID_ARGUMENT, "steps"),
        ("zero inversion steps", |c: &mut TranslateCall| c.options.inversion_steps = 0, DM_ERR_INVALID_ARGUMENT, "steps"),
        ("inversion missing sampling timesteps", |c: &mut TranslateCall| c.options.inversion_steps = 7, DM_ERR_INVALID_ARGUMENT, "inversion steps"),
        ("unknown latent", |c: &mut TranslateCall| c.options.latent = 9, DM_ERR_INVALID_ARGUMENT, "DM_LATENT_"),
        ("old struct_size", |c: &mut TranslateCall| c.options.struct_size = 4, DM_ERR_INVALID_ARGUMENT, "struct_size"),
        ("short output", |c: &mut TranslateCall| c.out_len -= 1, DM_ERR_BUFFER_TOO_SMALL, &needed),
    ];
    for (what, edit, status, expected) in cases {
        let (got, message) = with(edit);
        assert_eq!(got, status, "{what}: {message}");
        assert!(message.contains(expected), "{what}: message {message:?} lacks {expected:?}");
    }

    let source = CString::new(SOURCE).unwrap();
    // SAFETY: NULL outputs are refused before anything is read past the checked arguments.
    let status = unsafe {
        ffi::dm_model_translate(model.0, &image.view(), source.as_ptr(), targets.as_ptr(), 2, null(), None, null_mut(), null_mut(), 0, null_mut(), 0)
    };
    assert_eq!(status, dm_status::DM_ERR_NULL_ARGUMENT);
    assert!(c_last_error().contains("out_images"), "{}", c_last_error());
    // SAFETY: as above; a NULL model handle.
    let status =
        unsafe { ffi::dm_model_translate(null(), &image.view(), source.as_ptr(), targets.as_ptr(), 2, null(), None, null_mut(), null_mut(), 0, null_mut(), 0) };
    assert_eq!(status, dm_status::DM_ERR_NULL_ARGUMENT, "{}", c_last_error());
}

fn generate_options(height: u32, width: u32, steps: u32) -> dm_generate_options {
    let mut options = std::mem::MaybeUninit::<dm_generate_options>::uninit();
    // SAFETY: a valid out pointer; the call fills the whole struct.
    assert_eq!(unsafe { ffi::dm_generate_options_default(options.as_mut_ptr()) }, dm_status::DM_OK);
    // SAFETY: initialised by the call above.
    let options = unsafe { options.assume_init() };
    dm_generate_options { height, width, steps, ..options }
}

/// Runs `dm_model_generate` into a buffer of `len` bytes.
fn c_generate(model: &CModel, prompts: &[*const c_char], options: &dm_generate_options, len: usize) -> (dm_status, Vec<u8>) {
    let mut out = vec![7u8; len];
    let list = if prompts.is_empty() { null() } else { prompts.as_ptr() };
    // SAFETY: valid pointers for their lengths; the strings outlive the call.
    let status = unsafe { ffi::dm_model_generate(model.0, list, prompts.len(), options, None, null_mut(), out.as_mut_ptr(), out.len()) };
    (status, out)
}

/// What is wrong, the prompts, options and buffer length given, the status and a part of the message
/// expected.
type GenerateCase<'a> = (&'a str, Vec<*const c_char>, dm_generate_options, usize, dm_status, &'a str);

#[test]
fn c_generation_equals_the_safe_api_and_refuses_bad_input() {
    let model = CModel::open(common::translate_fixture_dir());
    let (_strings, prompts) = c_strings(&TARGETS);
    let (h, w) = (16, 24);
    let options = generate_options(h, w, 3);
    let len = 2 * (h * w * 3) as usize;
    let (status, images) = c_generate(&model, &prompts, &options, len);
    assert_eq!(status, dm_status::DM_OK, "{}", c_last_error());
    let safe = StableDiffusion::open(common::translate_fixture_dir(), &ModelOptions::default()).unwrap();
    let safe_options = GenerateOptions { steps: 3, height: h as i64, width: w as i64, ..GenerateOptions::default() };
    let expected = translate::generate(&safe, &TARGETS, &safe_options, &mut |_, _| true).unwrap();
    assert_eq!(images, packed_rgb(&expected.images));

    use dm_status::*;
    let cases: Vec<GenerateCase> = vec![
        ("no prompts", vec![], options, len, DM_ERR_INVALID_ARGUMENT, "no prompts"),
        ("a NULL prompt", vec![prompts[0], null()], options, len, DM_ERR_INVALID_ARGUMENT, "`prompts[1]` is NULL"),
        ("zero steps", prompts.clone(), dm_generate_options { steps: 0, ..options }, len, DM_ERR_INVALID_ARGUMENT, "steps"),
        ("infinite guidance", prompts.clone(), dm_generate_options { guidance: f64::INFINITY, ..options }, len, DM_ERR_INVALID_ARGUMENT, "guidance"),
        ("short output", prompts.clone(), options, len - 1, DM_ERR_BUFFER_TOO_SMALL, "needs 2304"),
    ];
    for (what, list, options, len, status, expected) in cases {
        let (got, out) = c_generate(&model, &list, &options, len);
        let message = c_last_error();
        assert_eq!(got, status, "{what}: {message}");
        assert!(message.contains(expected), "{what}: message {message:?} lacks {expected:?}");
        assert!(out.iter().all(|&b| b == 7), "{what}: output written on failure");
    }
}
