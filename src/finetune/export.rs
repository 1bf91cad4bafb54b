//! Writing trained weights as diffusers folders: a component's `config.json` and safetensors file, and
//! the untrained components copied beside it so that the saved pipeline loads on its own.
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::error::{Error, Result};
use crate::model::{Component, ComponentOverrides, StableDiffusion};

/// Writes a model's UNet as a diffusers component folder.
pub fn save_unet(model: &StableDiffusion, dir: &Path) -> Result<()> {
    let unet = model.unet_weights();
    save_component(&unet.parameters, &unet.config, dir)
}

/// Writes a diffusers component folder: `config.json` and `diffusion_pytorch_model.safetensors`.
pub fn save_component(parameters: &[(String, Tensor)], config: &serde_json::Value, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(config).expect("a JSON value serialises");
    crate::io::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    let tensors: Vec<(String, Tensor)> =
        parameters.iter().map(|(name, t)| Ok((name.clone(), t.f_detach()?.f_to_device(tch::Device::Cpu)?.f_contiguous()?))).collect::<Result<_>>()?;
    // Never rewritten in place: a model loaded from this folder maps the old file, and rewriting it
    // would pull the pages from under that mapping (SIGBUS).
    let path = dir.join("diffusion_pytorch_model.safetensors");
    crate::io::write_atomic_with(&path, |temporary| Tensor::write_safetensors(&tensors, temporary).map_err(|e| Error::io(&path, e)))
}

/// The folders a saved pipeline copies its untrained components from: each component's folder as
/// the model was loaded (overrides included), and the `model_index.json` of the pipeline folder or,
/// where it has none (a folder holding only a finetuned UNet), of the base pipeline the overrides
/// point into. Resolved before any training, so a missing source fails at once, not after the work.
pub struct ComponentSources {
    folders: Vec<(Component, PathBuf)>,
    model_index: PathBuf,
}

impl ComponentSources {
    pub fn resolve(root: &Path, overrides: &ComponentOverrides, components: &[Component]) -> Result<Self> {
        let folders: Vec<(Component, PathBuf)> = components.iter().map(|&component| (component, overrides.component_dir(root, component))).collect();
        if let Some((component, dir)) = folders.iter().find(|(_, dir)| !dir.is_dir()) {
            let name = component.folder_name();
            return Err(Error::InvalidModel(format!("missing model component folder {} (the {name} to copy into the saved model)", dir.display())));
        }
        let model_index = std::iter::once(root)
            .chain(overrides.base_folders())
            .map(|dir| dir.join("model_index.json"))
            .find(|path| path.is_file())
            .ok_or_else(|| Error::InvalidModel(format!("no model_index.json in {} or the folders its components are taken from", root.display())))?;
        Ok(ComponentSources { folders, model_index })
    }

    pub fn copy_to(&self, out: &Path) -> Result<()> {
        for (component, dir) in &self.folders {
            copy_dir(dir, &out.join(component.folder_name()))?;
        }
        copy_file(&self.model_index, &out.join("model_index.json"))
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        if path.is_file() {
            let target = to.join(path.file_name().expect("a file has a name"));
            copy_file(&path, &target)?;
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    crate::io::write_atomic_with(to, |temporary| {
        std::fs::copy(from, temporary).map(drop).map_err(|e| Error::io(to, format!("copying {}: {e}", from.display())))
    })
}
