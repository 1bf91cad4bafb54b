//! LoRA adapters on the UNet and the text encoder, in diffusers/peft naming
//! (`unet.<module>.lora_A.weight` / `lora_B.weight`, and the older `lora.down` / `lora.up`,
//! `lora_linear_layer.down` / `.up` and attention-processor `to_q_lora` names, with optional `.alpha`)
//! and in kohya's (`lora_unet_<module_with_underscores>`, `lora_te_...`, `.lora_down`, `.lora_up`,
//! `.alpha`).
//!
//! Adapters are **merged** into the weights: W ← W + scale · (alpha / rank) · up · down, for each
//! adapted layer. Applied on the fly, every forward would pay two extra products per adapted layer and
//! every layer type would need an adapter hook; merged, inference costs what it did, and only the
//! adapted tensors are new memory (the others stay views of the weight files). The base tensor of each
//! adapted weight is kept as it was (not a copy: the same storage), so unloading puts it back
//! bit for bit. A second load **stacks**: its update is added to the weights as they are, and unloading
//! removes every adapter at once.
//!
//! The parameter a merged weight replaces keeps its identity (libtorch's `set_data` swaps its storage),
//! so the layers that hold it see the merged values without being rebuilt.
use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// The network an adapter module belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Unet,
    TextEncoder,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Unet => "unet",
            Target::TextEncoder => "text_encoder",
        }
    }
}

/// One adapted layer's factors as read from the file.
#[derive(Default)]
struct Factors {
    down: Option<Tensor>,
    up: Option<Tensor>,
    alpha: Option<f64>,
}

/// The base weights that adapters replaced, to put back on unload.
#[derive(Default)]
pub struct LoraState {
    originals: Vec<(Target, usize, Tensor)>,
}

impl LoraState {
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }
}

/// How a file's key names its layer: the network, the module as written in the file, and the factor.
enum KeyKind {
    Down,
    Up,
    Alpha,
}

/// The diffusers/peft factor suffixes and what each is.
const SUFFIXES: [(&str, KeyKind); 9] = [
    (".lora_A.weight", KeyKind::Down),
    (".lora_B.weight", KeyKind::Up),
    (".lora.down.weight", KeyKind::Down),
    (".lora.up.weight", KeyKind::Up),
    (".lora_linear_layer.down.weight", KeyKind::Down),
    (".lora_linear_layer.up.weight", KeyKind::Up),
    (".lora_down.weight", KeyKind::Down),
    (".lora_up.weight", KeyKind::Up),
    (".alpha", KeyKind::Alpha),
];

/// A parameter list of one network, looked up by module in both namings.
pub struct ModuleIndex {
    /// Module name (diffusers, without the text tower's `text_model.`) → index of its `.weight`.
    by_module: HashMap<String, usize>,
    /// The same with dots as underscores (kohya's flattening) → the module name.
    by_flat: HashMap<String, String>,
}

/// CLIP's modules with or without transformers' `text_model.` level: the weight files and adapters
/// write either.
fn without_text_model(module: &str) -> &str {
    module.strip_prefix("text_model.").unwrap_or(module)
}

impl ModuleIndex {
    pub fn new(parameters: &[(String, Tensor)]) -> Self {
        let mut by_module = HashMap::new();
        let mut by_flat = HashMap::new();
        for (index, (name, _)) in parameters.iter().enumerate() {
            if let Some(module) = name.strip_suffix(".weight") {
                let module = without_text_model(module).to_string();
                by_flat.insert(module.replace('.', "_"), module.clone());
                by_module.insert(module, index);
            }
        }
        ModuleIndex { by_module, by_flat }
    }
}

/// The diffusers module an older attention-processor name stands for (`attn1.processor.to_q_lora`
/// → `attn1.to_q`; in the text encoder `self_attn.to_q_lora` → `self_attn.q_proj`).
fn processor_module(target: Target, module: &str) -> String {
    let module = module.replace(".processor.", ".");
    let Some(base) = module.strip_suffix("_lora") else { return module };
    let (parent, leaf) = base.rsplit_once('.').unwrap_or(("", base));
    let renamed = match (target, leaf) {
        (Target::Unet, "to_out") => "to_out.0".to_string(),
        (Target::TextEncoder, "to_out") => "out_proj".to_string(),
        (Target::TextEncoder, leaf) => format!("{}_proj", leaf.trim_start_matches("to_")),
        (Target::Unet, leaf) => leaf.to_string(),
    };
    if parent.is_empty() {
        renamed
    } else {
        format!("{parent}.{renamed}")
    }
}

/// Splits a key into (network, module in diffusers naming, factor); None for a key of neither naming.
fn parse_key(key: &str, indices: &HashMap<Target, ModuleIndex>) -> Option<(Target, String, KeyKind)> {
    for (prefix, target) in [("lora_unet_", Target::Unet), ("lora_te_", Target::TextEncoder)] {
        if let Some(rest) = key.strip_prefix(prefix) {
            let (flat, leaf) = rest.split_once('.')?;
            let kind = match leaf {
                "lora_down.weight" => KeyKind::Down,
                "lora_up.weight" => KeyKind::Up,
                "alpha" => KeyKind::Alpha,
                _ => return None,
            };
            let flat = flat.strip_prefix("text_model_").unwrap_or(flat);
            // An unknown module keeps its flat name, to be reported.
            let module = indices[&target].by_flat.get(flat).cloned().unwrap_or_else(|| format!("{prefix}{flat}"));
            return Some((target, module, kind));
        }
    }
    let (target, rest) = match key.split_once('.') {
        Some(("unet", rest)) => (Target::Unet, rest),
        Some(("text_encoder", rest)) => (Target::TextEncoder, rest),
        _ => (Target::Unet, key),
    };
    let (suffix, kind) = SUFFIXES.iter().find(|(suffix, _)| rest.ends_with(suffix))?;
    let module = processor_module(target, &rest[..rest.len() - suffix.len()]);
    let kind = match kind {
        KeyKind::Down => KeyKind::Down,
        KeyKind::Up => KeyKind::Up,
        KeyKind::Alpha => KeyKind::Alpha,
    };
    Some((target, without_text_model(&module).to_string(), kind))
}

/// Reads an adapter file into each layer's factors, refusing keys of no known naming.
fn read_factors(path: &Path, indices: &HashMap<Target, ModuleIndex>) -> Result<HashMap<(Target, String), Factors>> {
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(Error::Unsupported(format!("{}: LoRA adapters are read from .safetensors files", path.display())));
    }
    if !path.is_file() {
        return Err(Error::io(path, "no such LoRA file"));
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| Error::CorruptWeights(format!("{}: {e}", path.display())))?;
    let mut factors: HashMap<(Target, String), Factors> = HashMap::new();
    let mut unknown = Vec::new();
    for (key, tensor) in tensors {
        let Some((target, module, kind)) = parse_key(&key, indices) else {
            unknown.push(key);
            continue;
        };
        let entry = factors.entry((target, module)).or_default();
        match kind {
            KeyKind::Down => entry.down = Some(tensor),
            KeyKind::Up => entry.up = Some(tensor),
            KeyKind::Alpha => entry.alpha = Some(tensor.f_double_value(&[])?),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: keys of no LoRA naming (diffusers/peft or kohya): {}", path.display(), listed(&unknown))));
    }
    Ok(factors)
}

/// The first names of a list, and how many there are.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let shown = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        format!("{shown} … ({} in all)", names.len())
    } else {
        shown
    }
}

/// One merged weight to install: which parameter, and its new value.
pub struct Update {
    pub target: Target,
    pub index: usize,
    pub merged: Tensor,
}

/// Reads the adapter at `path` and computes every adapted weight merged at `scale`, from the
/// parameters as they are now. Nothing is changed here: an adapter for unknown modules or other shapes
/// is refused with their names.
pub fn merged_weights(path: &Path, scale: f64, parameters: &HashMap<Target, &[(String, Tensor)]>) -> Result<Vec<Update>> {
    let indices: HashMap<Target, ModuleIndex> = parameters.iter().map(|(&target, list)| (target, ModuleIndex::new(list))).collect();
    let factors = read_factors(path, &indices)?;
    if factors.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: no LoRA tensors in the file", path.display())));
    }
    let mut unknown = Vec::new();
    let mut problems = Vec::new();
    let mut updates = Vec::new();
    let mut modules: Vec<_> = factors.into_iter().collect();
    modules.sort_by(|a, b| a.0 .1.cmp(&b.0 .1));
    for ((target, module), factors) in modules {
        let Some(&index) = indices[&target].by_module.get(&module) else {
            unknown.push(format!("{}.{module}", target.label()));
            continue;
        };
        let weight = &parameters[&target][index].1;
        match delta(&factors, &weight.size()) {
            Ok(delta) => {
                let delta = delta.f_to_device(weight.device())?.f_mul_scalar(scale)?;
                let merged = weight.f_to_kind(Kind::Float)?.f_add(&delta)?.f_to_kind(weight.kind())?;
                updates.push(Update { target, index, merged });
            }
            Err(problem) => problems.push(format!("{}.{module}: {problem}", target.label())),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: the model has no layers named {} (a LoRA for another base model?)", path.display(), listed(&unknown))));
    }
    if !problems.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{}: the adapter does not fit this model: {} (a LoRA for another base model?)",
            path.display(),
            listed(&problems)
        )));
    }
    Ok(updates)
}

/// (alpha / rank) · up · down in the weight's shape, in f32 on the weight's device; an explanation
/// when the factors are incomplete or do not fit a weight of `shape`.
fn delta(factors: &Factors, shape: &[i64]) -> std::result::Result<Tensor, String> {
    let (Some(down), Some(up)) = (&factors.down, &factors.up) else {
        return Err("has only one of the two factors (down/A and up/B)".into());
    };
    let (down_shape, up_shape) = (down.size(), up.size());
    let rank = down_shape.first().copied().unwrap_or(0);
    let input: i64 = shape.iter().skip(1).product();
    let fits = shape.len() >= 2
        && up_shape.len() == shape.len()
        && down_shape.len() == shape.len()
        && up_shape[0] == shape[0]
        && up_shape[1] == rank
        && up_shape[2..].iter().all(|&d| d == 1)
        && down_shape[1..] == shape[1..]
        && rank > 0;
    if !fits {
        return Err(format!("factors down {down_shape:?} and up {up_shape:?} do not make a weight of shape {shape:?}"));
    }
    let alpha = factors.alpha.unwrap_or(rank as f64);
    let product = || -> std::result::Result<Tensor, tch::TchError> {
        let up = up.f_to_kind(Kind::Float)?.f_reshape([shape[0], rank])?;
        let down = down.f_to_kind(Kind::Float)?.f_reshape([rank, input])?;
        up.f_matmul(&down)?.f_mul_scalar(alpha / rank as f64)?.f_reshape(shape)
    };
    product().map_err(|e| e.to_string())
}

/// Installs merged weights (computed on each weight's device and in its dtype), remembering each
/// replaced parameter's base tensor the first time it is adapted. Whatever fails, fails before any
/// weight changes.
pub fn install(updates: Vec<Update>, parameters: &mut HashMap<Target, &mut [(String, Tensor)]>, state: &mut LoraState) -> Result<()> {
    let mut originals = Vec::new();
    for update in &updates {
        let adapted = |(t, i): (Target, usize)| t == update.target && i == update.index;
        if !state.originals.iter().map(|(t, i, _)| (*t, *i)).chain(originals.iter().map(|(t, i, _): &(Target, usize, Tensor)| (*t, *i))).any(adapted) {
            // A new tensor object over the same storage: the base values, whatever the parameter holds.
            originals.push((update.target, update.index, parameters[&update.target][update.index].1.f_detach()?));
        }
    }
    state.originals.extend(originals);
    for Update { target, index, merged } in updates {
        parameters.get_mut(&target).expect("every target's parameters are given")[index].1.set_data(&merged);
    }
    Ok(())
}

/// Puts every adapted parameter's base tensor back.
pub fn uninstall(parameters: &mut HashMap<Target, &mut [(String, Tensor)]>, state: &mut LoraState) {
    for (target, index, original) in state.originals.drain(..) {
        let parameter = &mut parameters.get_mut(&target).expect("every target's parameters are given")[index].1;
        parameter.set_data(&original);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_attention_processor_names_map_to_the_modules() {
        assert_eq!(
            processor_module(Target::Unet, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora"),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
        );
        assert_eq!(processor_module(Target::TextEncoder, "text_model.encoder.layers.0.self_attn.to_k_lora"), "text_model.encoder.layers.0.self_attn.k_proj");
        assert_eq!(processor_module(Target::Unet, "mid_block.attentions.0.proj_in"), "mid_block.attentions.0.proj_in");
    }
}
