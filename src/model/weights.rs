//! Reads safetensors files as libtorch tensors, through a memory mapping of each file.
//!
//! tch's `VarStore::load` initialises every variable randomly and then reads whole files into memory;
//! at SD 1.5 size that doubles both the load time and the peak memory. Here each file's header is parsed
//! once and every tensor's byte range is checked against the file's length (and against the other
//! tensors' ranges) before the file is mapped, so a truncated file is an error, not a SIGBUS on first
//! use. Then each tensor the model asks for is, by case:
//!
//! - file dtype = compute dtype, on the CPU (data aligned for its dtype, as safetensors writers align
//!   it): a **view of the mapping** (`Tensor::from_blob`). Nothing is copied; pages come from the page
//!   cache when first used, as with diffusers (safetensors maps its files too). Loading takes
//!   milliseconds and the resident set grows only as the model runs.
//! - a dtype conversion (f32 files loaded as bf16) or a CUDA device: copied from a view of its mapped
//!   range into a new tensor of the compute dtype on the device, 16 MiB of file bytes at a time, each
//!   chunk's pages **released** once copied (`madvise(MADV_DONTNEED)`), so the file's pages do not pile
//!   up beside the converted weights: the peak is the converted weights plus one chunk, and no f32
//!   temporary is allocated.
//! - data not aligned for its dtype (a hand-made file): copied out of the mapping into a fresh tensor,
//!   then converted as above.
//!
//! At SD 1.5 size (BENCHMARKS.md, indicative single runs on 2 cores, files in the page cache): f32
//! loads in about 0.01 s with a peak resident set of the runtime alone, bf16 from f32 files in about
//! 0.9 s with a peak of 1.18× the bf16 weights (the previous `pread` loader: 2.4–4 s and 1.5 s).
//!
//! **Lifetime.** A view does not own its memory and libtorch holds no reference to the mapping, so the
//! mapping ([`MappedFile`], shared through an `Arc`) must outlive every tensor that views it. The
//! `WeightFiles` holds it while loading; [`WeightFiles::mappings_in_use`] hands the ones that tensors
//! view to the model, which keeps them as long as it lives (`StableDiffusion`'s `_mappings`). So no
//! weight tensor may outlive its model (shallow copies included); mappings no tensor views are unmapped
//! when the `WeightFiles` is dropped.
//!
//! **Writes.** Files are opened read-only and mapped private and writable: finetuning updates the UNet's
//! parameters in place, and on a view those writes become the process's own copy-on-write pages; they
//! never reach the file. The other way round, a model sees the file as it is, not as it was when
//! opened: rewriting a weight file in place (truncating it) while a model maps it can kill the process
//! with SIGBUS, as with any mapped file. Replace such files (write a new file, then rename it over the
//! old one) instead.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// A whole safetensors file mapped into memory, private and writable (see the module doc: writes to
/// views become copy-on-write pages of this process). Unmapped when dropped.
pub struct MappedFile {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory that this value owns until it is dropped; it may be unmapped
// from any thread, and its bytes are only reached through tensors, whose sharing rules are the model's
// (see `StableDiffusion`'s `Sync`).
unsafe impl Send for MappedFile {}
// SAFETY: `&MappedFile` only gives out addresses and releases pages of converted tensors, which no
// tensor views (byte ranges are disjoint, checked in `read_header`).
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps the first `len` bytes of `file` (its length when the header was checked; at least 8).
    fn map(path: &Path, file: &File, len: u64) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::io(path, "file too large to map"))?;
        // SAFETY: a new mapping chosen by the kernel (null address hint), overlapping nothing of ours;
        // `file` is an open descriptor, which the mapping does not need once made.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if base == libc::MAP_FAILED {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
        Ok(MappedFile { base: base.cast(), len })
    }

    /// The address of byte `offset` (`offset` lies inside the file: `read_header` checked it).
    fn at(&self, offset: u64) -> *mut u8 {
        self.base.wrapping_add(offset as usize)
    }

    /// Drops the resident pages that lie wholly inside bytes `offset..offset + len`, once the tensor
    /// there has been converted: a later access would read them from the file again. The pages it
    /// shares with its neighbours stay (at most two per tensor).
    fn release(&self, offset: u64, len: u64) {
        let page = page_size();
        let start = (offset as usize).next_multiple_of(page);
        let end = (offset + len) as usize / page * page;
        if end > start {
            // SAFETY: `start..end` is page-aligned and inside this mapping, and holds only bytes of
            // one tensor that was converted, not viewed (ranges are disjoint); MADV_DONTNEED on a
            // private file mapping only drops pages, which read back as the file's bytes.
            let status = unsafe { libc::madvise(self.at(start as u64).cast(), end - start, libc::MADV_DONTNEED) };
            // Advice that fails only leaves the pages resident until the mapping goes.
            if status != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "madvise(MADV_DONTNEED) failed");
            }
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: this value's own mapping; whoever viewed it keeps the `Arc` (module doc, "Lifetime"),
        // so no tensor uses these bytes any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// One safetensors file of a component.
struct WeightFile {
    path: PathBuf,
    map: Arc<MappedFile>,
    /// Whether a tensor handed out views `map`, so that the model has to keep it.
    viewed: Cell<bool>,
}

/// The tensors of one model component (one or more safetensors files), read on demand.
pub struct WeightFiles {
    files: Vec<WeightFile>,
    entries: HashMap<String, TensorEntry>,
    device: Device,
    dtype: Kind,
    /// Every tensor handed out, under its name: the component's parameters, for training and saving.
    loaded: RefCell<Vec<(String, Tensor)>>,
    /// For a file in another layout than diffusers' (a single-file checkpoint): where each tensor a
    /// layer asks for lies in it.
    key_map: Option<KeyMap>,
}

/// Where a tensor asked for under diffusers' name lies in a file of another layout: the file's key,
/// and, for a fused tensor, which of `count` equal slices along its first dimension it is.
pub struct SourceKey {
    pub key: String,
    pub slice: Option<(u64, u64)>,
}

impl SourceKey {
    pub fn whole(key: String) -> Self {
        SourceKey { key, slice: None }
    }
}

/// Maps a diffusers tensor name to its place in a file of another layout; None where no key of that
/// layout corresponds.
pub type KeyMap = Box<dyn Fn(&str) -> Option<SourceKey>>;

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: [u64; 2],
}

/// Bytes of a tensor converted at a time (see [`WeightFiles::convert`]): CLIP's token embedding, the
/// largest tensor of SD 1.5 (145 MiB at f32), would otherwise sit whole in the resident set beside
/// every weight already loaded.
const CONVERT_CHUNK_BYTES: u64 = 16 << 20;

/// A header larger than this is not a safetensors file but garbage (the format caps it at 100 MB).
const MAX_HEADER_LEN: u64 = 100_000_000;

impl WeightFiles {
    /// Opens the given safetensors files: checks their headers and maps them; tensors are made later by
    /// [`WeightFiles::get`].
    pub fn open(paths: &[PathBuf], device: Device, dtype: Kind) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            for (name, mut entry) in read_header(path, &file, file_len)? {
                entry.file = index;
                entries.insert(name, entry);
            }
            let map = Arc::new(MappedFile::map(path, &file, file_len)?);
            files.push(WeightFile { path: path.clone(), map, viewed: Cell::new(false) });
        }
        Ok(WeightFiles { files, entries, device, dtype, loaded: RefCell::new(Vec::new()), key_map: None })
    }

    /// Opens one file of another layout, whose tensors are found through `key_map`. A tensor may then
    /// also be a fused tensor's slice, and a 1×1 convolution kernel serves a linear layer and the
    /// other way round (the same bytes).
    pub fn open_mapped(path: &Path, device: Device, dtype: Kind, key_map: KeyMap) -> Result<Self> {
        Ok(WeightFiles { key_map: Some(key_map), ..Self::open(&[path.to_path_buf()], device, dtype)? })
    }

    /// The shape of the file's tensor `key` (its own name, not mapped).
    pub fn shape_of(&self, key: &str) -> Option<&[i64]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// Whether any of the file's keys (not mapped) starts with `prefix`.
    pub fn has_key_prefix(&self, prefix: &str) -> bool {
        self.entries.keys().any(|k| k.starts_with(prefix))
    }

    /// The files' names, for error messages.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|f| f.path.display().to_string()).collect();
        names.join(", ")
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.key_map {
            Some(key_map) => key_map(name).is_some_and(|source| self.entries.contains_key(&source.key)),
            None => self.entries.contains_key(name),
        }
    }

    /// Tensor `name`, after checking that its shape is `expected`, in the compute dtype on the compute
    /// device: a view of the file's mapping where no conversion is needed (see the module doc).
    pub fn get(&self, name: &str, expected: &[i64]) -> Result<Tensor> {
        let entry = match &self.key_map {
            Some(key_map) => self.mapped_entry(key_map, name, expected)?,
            None => {
                let entry = self.entries.get(name).ok_or_else(|| Error::MissingTensor { name: name.to_string(), file: self.describe() })?;
                if entry.shape != expected {
                    return Err(Error::ShapeMismatch { name: name.to_string(), expected: expected.to_vec(), found: entry.shape.clone() });
                }
                entry.clone()
            }
        };
        let tensor = self.load(&entry)?;
        self.loaded.borrow_mut().push((name.to_string(), tensor.shallow_clone()));
        Ok(tensor)
    }

    /// The entry of the file's tensor that `name` maps to, cut to its slice and shaped as `expected`.
    /// Errors name the file's key (and the name asked for) and both shapes.
    fn mapped_entry(&self, key_map: &KeyMap, name: &str, expected: &[i64]) -> Result<TensorEntry> {
        let missing = |key: String| Error::MissingTensor { name: key, file: self.describe() };
        let source = key_map(name).ok_or_else(|| missing(format!("{name} (no key of the file's layout corresponds to it)")))?;
        let entry = self.entries.get(&source.key).ok_or_else(|| missing(format!("{} (for {name})", source.key)))?;
        let count = source.slice.map_or(1, |(_, count)| count);
        let mut wanted = expected.to_vec();
        if let Some(first) = wanted.first_mut() {
            *first *= count as i64;
        }
        if entry.shape != wanted && without_unit_kernel(&entry.shape) != without_unit_kernel(&wanted) {
            return Err(Error::ShapeMismatch { name: format!("{} (for {name})", source.key), expected: wanted, found: entry.shape.clone() });
        }
        let mut entry = entry.clone();
        if let Some((index, count)) = source.slice {
            entry.len /= count;
            entry.offset += index * entry.len;
        }
        entry.shape = expected.to_vec();
        Ok(entry)
    }

    /// The mappings that tensors handed out are views of. Whoever keeps those tensors must keep these
    /// too (the model does): a view does not keep its memory alive.
    pub fn mappings_in_use(&self) -> Vec<Arc<MappedFile>> {
        self.files.iter().filter(|f| f.viewed.get()).map(|f| Arc::clone(&f.map)).collect()
    }

    /// The tensors the model took, by name, in load order. Tensors of the files that no layer asked
    /// for (e.g. CLIP's `position_ids` buffer) are logged, not kept.
    pub fn into_parameters(self) -> Vec<(String, Tensor)> {
        let loaded = self.loaded.into_inner();
        let unused = self.entries.len().saturating_sub(loaded.len());
        // A mapped file holds other components' tensors too: its unused ones say nothing.
        if unused > 0 && self.key_map.is_none() {
            let taken: std::collections::HashSet<&str> = loaded.iter().map(|(n, _)| n.as_str()).collect();
            let names: Vec<&String> = self.entries.keys().filter(|n| !taken.contains(n.as_str())).take(5).collect();
            tracing::debug!(unused, ?names, "tensors in the weight files that the model does not use");
        }
        loaded
    }

    /// An entry's tensor in the compute dtype on the compute device: the view itself when that needs
    /// no conversion, else a converted copy, after which the entry's file pages are released.
    fn load(&self, entry: &TensorEntry) -> Result<Tensor> {
        let file = &self.files[entry.file];
        let aligned = entry.offset.is_multiple_of(entry.kind.elt_size_in_bytes() as u64);
        if aligned && entry.kind == self.dtype && self.device == Device::Cpu {
            file.viewed.set(true);
            return self.view(entry);
        }
        let source = if aligned { self.view(entry)? } else { self.copy_out(entry)? };
        self.convert(entry, &source)
    }

    /// `source` (an entry's data, in the file's dtype on the CPU) copied into a new tensor of the
    /// compute dtype on the compute device, chunk by chunk, releasing the entry's file pages as each
    /// chunk is done: converting the largest tensor then adds at most one chunk to the peak.
    fn convert(&self, entry: &TensorEntry, source: &Tensor) -> Result<Tensor> {
        let numel = entry.shape.iter().product::<i64>();
        let element_bytes = entry.kind.elt_size_in_bytes() as u64;
        let chunk = (CONVERT_CHUNK_BYTES / element_bytes) as i64;
        let source = source.f_view([numel])?;
        // A new tensor, never an alias of the mapping, so releasing pages cannot touch it.
        let converted = Tensor::f_empty([numel], (self.dtype, self.device))?;
        let mut done = 0;
        while done < numel {
            let len = chunk.min(numel - done);
            converted.f_narrow(0, done, len)?.f_copy_(&source.f_narrow(0, done, len)?)?;
            done += len;
            self.files[entry.file].map.release(entry.offset, done as u64 * element_bytes);
        }
        Ok(converted.f_view(entry.shape.as_slice())?)
    }

    /// An entry's bytes in the mapping as a CPU tensor of the file's dtype and the entry's shape, without
    /// copying. The entry's data must be aligned for its dtype.
    fn view(&self, entry: &TensorEntry) -> Result<Tensor> {
        let strides = contiguous_strides(&entry.shape);
        let data = self.files[entry.file].map.at(entry.offset);
        // SAFETY: the entry's `len` bytes (exactly shape × dtype size, checked in `read_header`) lie
        // inside the mapping, at an address aligned for the dtype (the caller checks); the mapping
        // outlives the view: the `WeightFiles` holds it, and the model keeps it when the view is kept
        // (`mappings_in_use`).
        Ok(unsafe { Tensor::f_from_blob(data, &entry.shape, &strides, entry.kind, Device::Cpu)? })
    }

    /// An entry's bytes copied out of the mapping into a fresh tensor: for data that is not aligned
    /// for its dtype, which a view cannot be.
    fn copy_out(&self, entry: &TensorEntry) -> Result<Tensor> {
        let tensor = Tensor::f_empty(entry.shape.as_slice(), (entry.kind, Device::Cpu))?;
        if entry.len > 0 {
            // SAFETY: the source is the entry's `len` bytes inside the mapping (`read_header`); the
            // target is a fresh contiguous tensor of the entry's shape and dtype, so of exactly `len`
            // bytes; the two do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(self.files[entry.file].map.at(entry.offset), tensor.data_ptr() as *mut u8, entry.len as usize) };
        }
        Ok(tensor)
    }
}

/// A shape without a trailing 1×1 kernel: (out, in, 1, 1) → (out, in), so that a 1×1 convolution's
/// kernel and a linear layer's weight (the same bytes) compare equal.
fn without_unit_kernel(shape: &[i64]) -> &[i64] {
    match shape {
        [_, _, 1, 1] => &shape[..2],
        _ => shape,
    }
}

/// Row-major strides of a contiguous tensor of `shape`.
fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Parses a safetensors header and checks every tensor's byte range against the file's length and
/// the other tensors' ranges (they must not share bytes: a converted tensor's pages are released).
fn read_header(path: &Path, file: &File, file_len: u64) -> Result<Vec<(String, TensorEntry)>> {
    let corrupt = |why: String| Error::CorruptWeights(format!("{}: not a valid safetensors file: {why}", path.display()));
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0).map_err(|_| corrupt("shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN || 8 + header_len > file_len {
        return Err(corrupt(format!("header length {header_len} does not fit in a file of {file_len} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| corrupt(e.to_string()))?;
    let parsed: HashMap<String, serde_json::Value> = serde_json::from_slice(&header).map_err(|e| corrupt(format!("header is not JSON: {e}")))?;
    let data_start = 8 + header_len;
    let mut entries = Vec::with_capacity(parsed.len());
    for (name, value) in parsed {
        if name == "__metadata__" {
            continue;
        }
        let h: HeaderEntry = serde_json::from_value(value).map_err(|e| corrupt(format!("entry `{name}`: {e}")))?;
        let kind = kind_of(&h.dtype).ok_or_else(|| corrupt(format!("`{name}` has unsupported dtype {}", h.dtype)))?;
        let [begin, end] = h.data_offsets;
        // Checked arithmetic: the offsets address memory of the mapping, so a header whose sizes
        // overflow must be refused, not wrapped into range.
        let expected_len = h.shape.iter().try_fold(kind.elt_size_in_bytes() as u64, |n, &d| u64::try_from(d).ok().and_then(|d| n.checked_mul(d)));
        if end < begin || Some(end - begin) != expected_len {
            return Err(corrupt(format!("`{name}`: byte range {begin}..{end} does not match shape {:?} {}", h.shape, h.dtype)));
        }
        if data_start.checked_add(end).is_none_or(|file_end| file_end > file_len) {
            return Err(corrupt(format!("`{name}` ends at byte {} but the file has {file_len} bytes (truncated?)", data_start.saturating_add(end))));
        }
        let entry = TensorEntry { file: 0, kind, shape: h.shape, offset: data_start + begin, len: end - begin };
        entries.push((name, entry));
    }
    check_disjoint(&entries).map_err(corrupt)?;
    Ok(entries)
}

/// Refuses tensors whose byte ranges share bytes (the format forbids it, and releasing a converted
/// tensor's pages must not touch another tensor's).
fn check_disjoint(entries: &[(String, TensorEntry)]) -> std::result::Result<(), String> {
    let mut ranges: Vec<(u64, u64, &str)> = entries.iter().filter(|(_, e)| e.len > 0).map(|(name, e)| (e.offset, e.offset + e.len, name.as_str())).collect();
    ranges.sort_unstable();
    match ranges.windows(2).find(|pair| pair[1].0 < pair[0].1) {
        Some(pair) => Err(format!("`{}` and `{}` share bytes {}..{}", pair[0].2, pair[1].2, pair[1].0, pair[0].1.min(pair[1].1))),
        None => Ok(()),
    }
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
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    pub fn get(&self, leaf: &str, shape: &[i64]) -> Result<Tensor> {
        self.files.get(&self.name(leaf), shape)
    }

    pub fn contains(&self, leaf: &str) -> bool {
        self.files.contains(&self.name(leaf))
    }
}
