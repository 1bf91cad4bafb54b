//! libdiffmine: "Diffusion Models as Data Mining Tools" (Siglidis et al., ECCV 2024) on Stable
//! Diffusion 1.x/2.x diffusers folders, as a Rust library with a stable C ABI (`include/diffmine.h`).
pub mod autoencoder;
pub mod cxr8;
pub mod dataset;
pub mod dicom;
pub mod error;
pub mod ffi;
pub mod finetune;
pub mod image;
pub mod io;
pub mod mining;
pub mod model;
pub mod rng;
#[cfg(feature = "synthetic")]
pub mod synthetic;
pub mod translate;
pub mod typicality;

pub use error::{Error, Result};
pub use model::{Component, ComponentOverrides, ModelOptions, StableDiffusion};
