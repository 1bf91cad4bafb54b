//! Resumable checkpoints of a finetuning run: beside a saved diffusers folder (or LoRA adapter file),
//! the optimiser's moments and step count and the random stream's state, so a resumed run continues the
//! same stream. LoRA adapters' own factors are kept there too, exactly as trained (the adapter file
//! holds B scaled by alpha / rank).
use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;

use super::training::{Trained, Trainer};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

impl Trainer {
    /// Writes what resuming needs beside a saved folder: the optimiser's moments and step count and
    /// the random stream's state.
    pub(super) fn save_state(&self, dir: &Path, rng: &SplitMix64, steps_done: usize) -> Result<()> {
        let names = self.trained_parameters().iter().map(|(n, _)| n);
        let mut moments: Vec<(String, Tensor)> = names
            .zip(self.optimization.optimizer.first_moments.iter().zip(&self.optimization.optimizer.second_moments))
            .flat_map(|(name, (m, v))| [(format!("m.{name}"), m.shallow_clone()), (format!("v.{name}"), v.shallow_clone())])
            .collect();
        if let Trained::Lora(adapters) = &self.trained {
            moments.extend(adapters.parameters.iter().map(|(name, t)| (format!("p.{name}"), t.shallow_clone())));
        }
        let path = dir.join("optimizer.safetensors");
        crate::io::write_atomic_with(&path, |temporary| Tensor::write_safetensors(&moments, temporary).map_err(|e| Error::io(&path, e)))?;
        let (state, spare) = rng.snapshot();
        let json = serde_json::json!({ "steps_done": steps_done, "optimizer_steps": self.optimization.optimizer.steps, "rng_state": state.to_string(), "rng_spare_normal": spare });
        let path = dir.join("trainer_state.json");
        crate::io::write_atomic(&path, json.to_string().as_bytes())
    }

    /// Restores a checkpoint's optimiser and random stream; returns the stream and the steps done.
    pub(super) fn load_state(&mut self, dir: &Path) -> Result<(SplitMix64, usize)> {
        let path = dir.join("trainer_state.json");
        let json: serde_json::Value = crate::model::config::read_json(&path)?;
        let bad = || Error::InvalidArgument(format!("{}: not a libdiffmine trainer state", path.display()));
        let steps_done = json["steps_done"].as_u64().ok_or_else(bad)? as usize;
        self.optimization.optimizer.steps = json["optimizer_steps"].as_i64().ok_or_else(bad)? as i32;
        let state: u64 = json["rng_state"].as_str().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let spare = json["rng_spare_normal"].as_f64();
        let path = dir.join("optimizer.safetensors");
        let stored: HashMap<String, Tensor> = Tensor::read_safetensors(&path).map_err(|e| Error::io(&path, e))?.into_iter().collect();
        let names: Vec<String> = self.trained_parameters().iter().map(|(n, _)| n.clone()).collect();
        for (i, name) in names.iter().enumerate() {
            for (moments, prefix) in [(&mut self.optimization.optimizer.first_moments, "m"), (&mut self.optimization.optimizer.second_moments, "v")] {
                let key = format!("{prefix}.{name}");
                let value = stored.get(&key).ok_or_else(|| Error::MissingTensor { name: key.clone(), file: path.display().to_string() })?;
                moments[i] = value.f_to_device(self.model.device())?;
            }
        }
        if let Trained::Lora(adapters) = &self.trained {
            let values: HashMap<String, Tensor> = stored.iter().filter_map(|(k, t)| Some((k.strip_prefix("p.")?.to_string(), t.shallow_clone()))).collect();
            adapters.set_values(&values, &path)?;
        }
        Ok((SplitMix64::restore((state, spare)), steps_done))
    }
}
