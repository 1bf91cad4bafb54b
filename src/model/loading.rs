//! Finding a component's config and weight files in a diffusers folder, and refusing the formats this
//! library does not read with a message that says what it does read.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The weight file stems diffusers (`diffusion_pytorch_model`) and transformers (`model`) write.
const WEIGHT_STEMS: [&str; 2] = ["diffusion_pytorch_model", "model"];

/// Formats we recognise but do not read: pickles execute code on load and cannot be mapped.
const PICKLE_EXTENSIONS: [&str; 4] = [".bin", ".ckpt", ".pt", ".pth"];

pub const SUPPORTED_FORMATS: &str = "libdiffmine reads diffusers folders with *.safetensors weights (optionally the *.<variant>.safetensors files)";

/// Checks that `root` is a diffusers pipeline folder (not a single-file checkpoint).
pub fn check_pipeline_folder(root: &Path) -> Result<()> {
    if root.is_file() {
        return Err(Error::Unsupported(format!("{} is a single file; single-file checkpoints are not supported: {SUPPORTED_FORMATS}", root.display())));
    }
    if root.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("the model path is empty".into()));
    }
    if !root.is_dir() {
        return Err(Error::io(root, "no such model folder"));
    }
    Ok(())
}

/// The config file of a component folder, with a clear error when it is missing.
pub fn component_config(dir: &Path, file_name: &str) -> Result<PathBuf> {
    if !dir.is_dir() {
        return Err(Error::InvalidModel(format!("missing model component folder {}", dir.display())));
    }
    let path = dir.join(file_name);
    if !path.is_file() {
        return Err(Error::InvalidModel(format!("missing {file_name} in {}", dir.display())));
    }
    Ok(path)
}

/// The safetensors files of a component: `<stem>.safetensors`, or the shards `<stem>-0000k-of-0000n`,
/// with `.<variant>` before the extension (or shard suffix) when a variant is asked for.
pub fn weight_files(dir: &Path, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let names = list_file_names(dir)?;
    let mut found: Vec<PathBuf> = names.iter().filter(|name| is_weight_file(name, variant)).map(|name| dir.join(name)).collect();
    found.sort();
    if !found.is_empty() {
        return Ok(found);
    }
    let wanted = match variant {
        Some(v) => format!("diffusion_pytorch_model.{v}.safetensors or model.{v}.safetensors"),
        None => "diffusion_pytorch_model.safetensors or model.safetensors".to_string(),
    };
    if let Some(pickle) = names.iter().find(|n| PICKLE_EXTENSIONS.iter().any(|ext| n.ends_with(ext))) {
        return Err(Error::Unsupported(format!("{} holds `{pickle}`, a PyTorch pickle checkpoint, and no {wanted}: {SUPPORTED_FORMATS}", dir.display())));
    }
    Err(Error::InvalidModel(format!("missing weight file in {}: expected {wanted}", dir.display())))
}

fn is_weight_file(name: &str, variant: Option<&str>) -> bool {
    let Some(base) = name.strip_suffix(".safetensors") else { return false };
    WEIGHT_STEMS.iter().any(|stem| {
        let Some(rest) = base.strip_prefix(stem) else { return false };
        let rest = match variant {
            Some(v) => match rest.strip_prefix('.').and_then(|r| r.strip_prefix(v)) {
                Some(r) => r,
                None => return false,
            },
            None => rest,
        };
        rest.is_empty() || is_shard_suffix(rest)
    })
}

/// `-00001-of-00002`
fn is_shard_suffix(rest: &str) -> bool {
    let Some(numbers) = rest.strip_prefix('-') else { return false };
    let mut parts = numbers.split("-of-");
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if !a.is_empty() && !b.is_empty() && a.chars().chain(b.chars()).all(|c| c.is_ascii_digit()))
}

fn list_file_names(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(entries.filter_map(|e| e.ok()).filter(|e| e.path().is_file()).filter_map(|e| e.file_name().into_string().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_file_names_match_diffusers_and_transformers_layouts() {
        assert!(is_weight_file("diffusion_pytorch_model.safetensors", None));
        assert!(is_weight_file("model.safetensors", None));
        assert!(is_weight_file("diffusion_pytorch_model-00001-of-00002.safetensors", None));
        assert!(!is_weight_file("diffusion_pytorch_model.fp16.safetensors", None));
        assert!(is_weight_file("diffusion_pytorch_model.fp16.safetensors", Some("fp16")));
        assert!(is_weight_file("model.fp16-00002-of-00002.safetensors", Some("fp16")));
        assert!(!is_weight_file("model.safetensors", Some("fp16")));
        assert!(!is_weight_file("diffusion_pytorch_model.bin", None));
        assert!(!is_weight_file("other.safetensors", None));
    }
}
