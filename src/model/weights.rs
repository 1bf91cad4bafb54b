//! Reads safetensors files straight into libtorch tensors.
//!
//! tch's `VarStore::load` initialises every variable randomly and then reads whole files into memory;
//! at SD 1.5 size that doubles both the load time and the peak memory. Here the header is parsed once,
//! and each tensor the model asks for is read (`pread`) directly into a tensor of its final shape, then
//! converted to the compute dtype and device. Peak memory is the loaded weights plus one tensor.
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Where one tensor lies in a safetensors file.
#[derive(Debug, Clone)]
struct TensorEntry {
    file: usize,
    kind: Kind,
    shape: Vec<i64>,
    offset: u64,
    len: u64,
}

/// The tensors of one model component (one or more safetensors files), read on demand.
pub struct WeightFiles {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, TensorEntry>,
    device: Device,
    dtype: Kind,
    /// Every tensor handed out, under its name: the component's parameters, for training and saving.
    loaded: RefCell<Vec<(String, Tensor)>>,
    /// One reused buffer per file dtype for tensors that are converted on load (e.g. f32 files read
    /// as bf16): a fresh temporary per tensor costs an allocation and page faults each time and
    /// fragments the heap, which raised both load time and peak memory.
    scratch: RefCell<HashMap<Kind, Tensor>>,
}

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: [u64; 2],
}

/// A header larger than this is not a safetensors file but garbage (the format caps it at 100 MB).
const MAX_HEADER_LEN: u64 = 100_000_000;

impl WeightFiles {
    /// Opens the given safetensors files; tensors are read later by [`WeightFiles::get`].
    pub fn open(paths: &[PathBuf], device: Device, dtype: Kind) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            for (name, mut entry) in read_header(path, &file)? {
                entry.file = index;
                entries.insert(name, entry);
            }
            files.push((path.clone(), file));
        }
        Ok(WeightFiles { files, entries, device, dtype, loaded: RefCell::new(Vec::new()), scratch: RefCell::new(HashMap::new()) })
    }

    /// The files' names, for error messages.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|(p, _)| p.display().to_string()).collect();
        names.join(", ")
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Reads tensor `name`, checks that its shape is `expected`, and returns it in the compute dtype
    /// on the compute device.
    pub fn get(&self, name: &str, expected: &[i64]) -> Result<Tensor> {
        let entry = self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            file: self.describe(),
        })?;
        if entry.shape != expected {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let converted = if entry.kind == self.dtype {
            let tensor = Tensor::f_empty(entry.shape.as_slice(), (entry.kind, Device::Cpu))?;
            self.read_into(name, entry, &tensor)?;
            tensor
        } else {
            let staged = self.scratch_view(entry)?;
            self.read_into(name, entry, &staged)?;
            staged.f_to_kind(self.dtype)?
        };
        let tensor = converted.f_to_device(self.device)?;
        self.loaded.borrow_mut().push((name.to_string(), tensor.shallow_clone()));
        Ok(tensor)
    }

    /// The tensors the model took, by name, in load order. Tensors of the files that no layer asked
    /// for (e.g. CLIP's `position_ids` buffer) are logged, not kept.
    pub fn into_parameters(self) -> Vec<(String, Tensor)> {
        let loaded = self.loaded.into_inner();
        let unused = self.entries.len() - loaded.len();
        if unused > 0 {
            let taken: std::collections::HashSet<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
            let names: Vec<&String> = self.entries.keys().filter(|n| !taken.contains(n.as_str())).take(5).collect();
            tracing::debug!(unused, ?names, "tensors in the weight files that the model does not use");
        }
        loaded
    }

    /// A contiguous view, shaped like `entry`, of the reused scratch buffer of the entry's file dtype.
    fn scratch_view(&self, entry: &TensorEntry) -> Result<Tensor> {
        let numel: i64 = entry.shape.iter().product();
        let mut scratch = self.scratch.borrow_mut();
        let buffer = scratch.entry(entry.kind).or_insert_with(|| Tensor::empty([0], (entry.kind, Device::Cpu)));
        if buffer.numel() < numel as usize {
            *buffer = Tensor::f_empty([numel], (entry.kind, Device::Cpu))?;
        }
        Ok(buffer.f_narrow(0, 0, numel)?.f_view(entry.shape.as_slice())?)
    }

    /// Reads a tensor's bytes from disk into `target`, a contiguous CPU tensor of the file's dtype and
    /// the entry's shape.
    fn read_into(&self, name: &str, entry: &TensorEntry, target: &Tensor) -> Result<()> {
        let (path, file) = &self.files[entry.file];
        // SAFETY: `target` is contiguous with exactly `entry.len` bytes (its shape and dtype are the
        // entry's, checked against the byte range in `read_header`), and no other reference to its
        // storage is in use while we fill it.
        let buffer = unsafe { std::slice::from_raw_parts_mut(target.data_ptr() as *mut u8, entry.len as usize) };
        file.read_exact_at(buffer, entry.offset)
            .map_err(|e| Error::CorruptWeights(format!("{}: reading `{name}`: {e}", path.display())))
    }
}

fn read_header(path: &Path, file: &File) -> Result<Vec<(String, TensorEntry)>> {
    let corrupt = |why: String| Error::CorruptWeights(format!("{}: not a valid safetensors file: {why}", path.display()));
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0).map_err(|_| corrupt("shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN || 8 + header_len > file_len {
        return Err(corrupt(format!("header length {header_len} does not fit in a file of {file_len} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| corrupt(e.to_string()))?;
    let parsed: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header is not JSON: {e}")))?;
    let data_start = 8 + header_len;
    let mut entries = Vec::with_capacity(parsed.len());
    for (name, value) in parsed {
        if name == "__metadata__" {
            continue;
        }
        let h: HeaderEntry =
            serde_json::from_value(value).map_err(|e| corrupt(format!("entry `{name}`: {e}")))?;
        let kind = kind_of(&h.dtype).ok_or_else(|| corrupt(format!("`{name}` has unsupported dtype {}", h.dtype)))?;
        let [begin, end] = h.data_offsets;
        let numel: i64 = h.shape.iter().product();
        let expected_len = numel as u64 * kind.elt_size_in_bytes() as u64;
        if end < begin || end - begin != expected_len || h.shape.iter().any(|&d| d < 0) {
            return Err(corrupt(format!("`{name}`: byte range {begin}..{end} does not match shape {:?} {}", h.shape, h.dtype)));
        }
        if data_start + end > file_len {
            return Err(corrupt(format!("`{name}` ends at byte {} but the file has {file_len} bytes (truncated?)", data_start + end)));
        }
        let entry = TensorEntry { file: 0, kind, shape: h.shape, offset: data_start + begin, len: expected_len };
        entries.push((name, entry));
    }
    Ok(entries)
}

fn kind_of(dtype: &str) -> Option<Kind> {
    Some(match dtype {
        "F32" => Kind::Float,
        "F16" => Kind::Half,
        "BF16" => Kind::BFloat16,
        "F64" => Kind::Double,
        "I64" => Kind::Int64,
        "I32" => Kind::Int,
        "I16" => Kind::Int16,
        "I8" => Kind::Int8,
        "U8" => Kind::Uint8,
        "BOOL" => Kind::Bool,
        _ => return None,
    })
}

/// A dotted prefix into a component's tensor names, as diffusers names its parameters
/// (`down_blocks.0.attentions.1.proj_in.weight`).
#[derive(Clone)]
pub struct WeightPath<'a> {
    files: &'a WeightFiles,
    prefix: String,
}

impl<'a> WeightPath<'a> {
    pub fn root(files: &'a WeightFiles) -> Self {
        WeightPath { files, prefix: String::new() }
    }

    /// The path one level down: `p.sub("resnets").sub(0)`.
    pub fn sub(&self, part: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { part.to_string() } else { format!("{}.{part}", self.prefix) };
        WeightPath { files: self.files, prefix }
    }

    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() { leaf.to_string() } else { format!("{}.{leaf}", self.prefix) }
    }

    pub fn get(&self, leaf: &str, shape: &[i64]) -> Result<Tensor> {
        self.files.get(&self.name(leaf), shape)
    }

    pub fn contains(&self, leaf: &str) -> bool {
        self.files.contains(&self.name(leaf))
    }
}
