//! CLIP's byte-level BPE tokenizer, id for id with transformers 5's `CLIPTokenizer` called as Stable
//! Diffusion calls it: `tokenizer(text, padding="max_length", max_length=model_max_length, truncation=True)`.
//!
//! transformers 5 builds that tokenizer on the `tokenizers` library, whatever files the folder holds, with
//! this pipeline (each step below mirrors one of its stages):
//!
//! 1. added tokens (`<|startoftext|>`, `<|endoftext|>`, a pad token such as SD 2's `!`) are cut out of the
//!    raw text, or out of the normalised text for those flagged `normalized`;
//! 2. each remaining piece is normalised: NFC, every run of whitespace to one space, lower case;
//! 3. it is split with CLIP's regex (whitespace is dropped), then with GPT-2's byte-level regex;
//! 4. each word's UTF-8 bytes are spelt in GPT-2's byte-to-unicode alphabet, its last symbol gets the
//!    `</w>` suffix, and BPE merges are applied by rank;
//! 5. the ids are truncated so that `<|startoftext|>` ... `<|endoftext|>` fits in `model_max_length`, then
//!    padded with the pad token's id.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// Suffix that CLIP's BPE appends to the last symbol of every word.
const END_OF_WORD: &str = "</w>";
/// The length transformers gives CLIP when `tokenizer_config.json` does not set one (SD's text encoders).
const DEFAULT_MAX_LENGTH: usize = 77;
/// transformers stores "no limit" as 1e30; anything this large cannot be a real context length.
const UNSET_MAX_LENGTH_ABOVE: u64 = 10_000;
/// CLIP's pre-tokenizer regex, verbatim from transformers' `CLIPTokenizer`.
const CLIP_PATTERN: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// The GPT-2 regex that `tokenizers`' ByteLevel pre-tokenizer applies after CLIP's. Its whitespace
/// alternatives (` ?` prefixes, `\s+(?!\S)`, `\s+`) are left out: CLIP's split never leaves whitespace,
/// and the `regex` crate has no look-ahead. It still matters: it cuts `<|startoftext|>` typed in a case
/// that no added token matches into `<|`, `startoftext`, `|>`.
const BYTE_LEVEL_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+";
/// Keys of the named special tokens, in the order transformers adds them (`SPECIAL_TOKENS_ATTRIBUTES`).
const SPECIAL_KEYS: [&str; 7] = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// Token -> id.
type Vocab = HashMap<String, i64>;
/// Merge pairs in rank order.
type MergeList = Vec<(String, String)>;
type JsonObject = serde_json::Map<String, Value>;

/// `CLIPTokenizer`'s defaults for the special tokens a folder does not name.
const DEFAULT_SPECIALS: [(&str, &str); 4] =
    [("bos_token", "<|startoftext|>"), ("eos_token", "<|endoftext|>"), ("unk_token", "<|endoftext|>"), ("pad_token", "<|endoftext|>")];

/// A token matched as a whole before BPE (`<|endoftext|>`, a pad token, ...).
#[derive(Debug, Clone)]
struct AddedToken {
    content: String,
    id: i64,
    /// Matched in the normalised (lower-cased) text rather than in the raw text.
    normalized: bool,
}

/// A special-token value as a config file states it: a plain string or a `{"content": ...}` dict.
/// transformers compares these with full equality, so whether it was a string is part of the value.
#[derive(Debug, Clone, PartialEq)]
struct TokenSpec {
    content: String,
    /// Whether it is matched in the normalised (lower-cased) text rather than the raw text.
    normalized: bool,
    from_string: bool,
}

/// One stretch of a text while added tokens are being cut out of it.
enum Segment<'a> {
    Text(&'a str),
    Added(i64),
}

/// A BPE merge waiting in the queue; the queue pops the lowest rank first, then the leftmost position.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct QueuedMerge {
    rank: usize,
    pos: usize,
    new_id: i64,
}

/// One symbol of a word during BPE, in a linked list so merges can remove symbols in place.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: i64,
    prev: Option<usize>,
    next: Option<usize>,
    merged_away: bool,
}

/// CLIP's tokenizer as loaded from a `tokenizer/` folder; see the module documentation.
pub struct ClipTokenizer {
    vocab: Vocab,
    /// (left id, right id) -> (rank, id of the merged token).
    merges: HashMap<(i64, i64), (usize, i64)>,
    /// Added tokens matched in the raw text, and those matched in the normalised text (content normalised).
    raw_added: Vec<AddedToken>,
    normalized_added: Vec<AddedToken>,
    whitespace: Regex,
    clip_split: Regex,
    byte_level_split: Regex,
    byte_to_char: [char; 256],
    /// What BPE emits for a symbol missing from the vocabulary (never happens with a full byte alphabet).
    unk_id: Option<i64>,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
    max_length: usize,
}

impl ClipTokenizer {
    /// Loads a tokenizer folder in either layout found in the wild: `vocab.json` + `merges.txt` (SD 1.5's own)
    /// or `tokenizer.json` alone (what current transformers saves). Reads `tokenizer_config.json` /
    /// `special_tokens_map.json` when present for the pad token (string or {"content": ...} dict; SD 2.x pads
    /// with "!"), the bos/eos tokens and `model_max_length` (default 77; values > 10000 mean "unset" -> 77).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let tokenizer_json = read_json_if_present(&dir.join("tokenizer.json"))?;
        // transformers prefers tokenizer.json when both layouts are present.
        let (vocab, merge_pairs) = match &tokenizer_json {
            Some(json) => vocab_and_merges_from_tokenizer_json(json, &dir.join("tokenizer.json"))?,
            None => vocab_and_merges_from_files(dir)?,
        };
        let merges = rank_merges(&vocab, &merge_pairs)?;
        let config_map = config.as_ref().and_then(Value::as_object);

        let specials = special_tokens(dir, config_map)?;
        let declared = declared_added_tokens(config_map, tokenizer_json.as_ref())?;
        let added = resolve_added_tokens(&vocab, &declared, &specials);

        // Every named special token is among the added tokens, which gives it an id.
        let special_id = |key: &str| {
            let content = &specials[key].content;
            added
                .iter()
                .find(|token| &token.content == content)
                .map(|token| token.id)
                .ok_or_else(|| Error::InvalidModel(format!("{}: {key} `{content}` has no id", dir.display())))
        };
        let (bos_id, eos_id, pad_id) = (special_id("bos_token")?, special_id("eos_token")?, special_id("pad_token")?);
        // BPE looks the unknown token up in its own vocabulary only, not among added tokens.
        let unk_id = vocab.get(&specials["unk_token"].content).copied();
        let max_length = max_length(config_map, dir)?;

        let whitespace = Regex::new(r"\s+").expect("valid regex");
        // Tokens flagged `normalized` are looked for in the normalised text, so their pattern is their
        // content normalised the same way.
        let (normalized_added, raw_added): (Vec<_>, Vec<_>) = added.into_iter().partition(|token| token.normalized);
        let normalized_added = normalized_added.into_iter().map(|token| AddedToken { content: normalize(&token.content, &whitespace), ..token }).collect();

        Ok(ClipTokenizer {
            vocab,
            merges,
            raw_added,
            normalized_added,
            whitespace,
            clip_split: Regex::new(CLIP_PATTERN).expect("valid regex"),
            byte_level_split: Regex::new(BYTE_LEVEL_PATTERN).expect("valid regex"),
            byte_to_char: bytes_to_unicode(),
            unk_id,
            bos_id,
            eos_id,
            pad_id,
            max_length,
        })
    }

    /// Token ids: bos, BPE tokens (truncated so the whole fits), eos, then pad ids up to max_length.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut body = self.tokenize(text);
        // `max_length` counts the two special tokens the post-processor wraps the text in.
        body.truncate(self.max_length - 2);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend(body);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        ids
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// The ids of `text` without bos/eos, truncation or padding.
    fn tokenize(&self, text: &str) -> Vec<i64> {
        let mut ids = Vec::new();
        for raw in split_added(text, &self.raw_added) {
            let raw = match raw {
                Segment::Added(id) => {
                    ids.push(id);
                    continue;
                }
                Segment::Text(raw) => raw,
            };
            // Each stretch between raw-matched tokens is normalised on its own, as `tokenizers` does.
            let normalized = normalize(raw, &self.whitespace);
            for piece in split_added(&normalized, &self.normalized_added) {
                match piece {
                    Segment::Added(id) => ids.push(id),
                    Segment::Text(piece) => self.tokenize_normalized(piece, &mut ids),
                }
            }
        }
        ids
    }

    /// Pre-tokenises normalised text into words and appends each word's BPE ids.
    fn tokenize_normalized(&self, text: &str, ids: &mut Vec<i64>) {
        for clip_word in self.clip_split.find_iter(text) {
            for word in self.byte_level_split.find_iter(clip_word.as_str()) {
                let spelled: String = word.as_str().bytes().map(|b| self.byte_to_char[b as usize]).collect();
                ids.extend(self.bpe(&spelled));
            }
        }
    }

    /// Byte-pair encodes one word (already spelt in the byte alphabet), exactly as `tokenizers`' BPE model
    /// does: symbols are the word's characters, the last one with `</w>`; then the pending merge with the
    /// lowest rank (leftmost on ties) is applied until none is left. This queue order differs from "merge
    /// every occurrence of the best pair" when one merge consumes a symbol another was waiting for.
    fn bpe(&self, word: &str) -> Vec<i64> {
        let mut symbols = self.initial_symbols(word);
        let mut queue = BinaryHeap::new();
        for pos in 0..symbols.len().saturating_sub(1) {
            self.queue_merge(&mut queue, &symbols, pos);
        }
        while let Some(Reverse(merge)) = queue.pop() {
            let left = symbols[merge.pos];
            let Some(right_pos) = left.next else { continue };
            // Entries go stale when a neighbour has changed since they were queued; `tokenizers` detects
            // that by checking that the pair still merges into the queued token.
            let still_valid = !left.merged_away && self.merges.get(&(left.id, symbols[right_pos].id)).is_some_and(|&(_, id)| id == merge.new_id);
            if !still_valid {
                continue;
            }
            let right = symbols[right_pos];
            symbols[merge.pos].id = merge.new_id;
            symbols[merge.pos].next = right.next;
            symbols[right_pos].merged_away = true;
            if let Some(after) = right.next {
                symbols[after].prev = Some(merge.pos);
            }
            if let Some(before) = left.prev {
                self.queue_merge(&mut queue, &symbols, before);
            }
            self.queue_merge(&mut queue, &symbols, merge.pos);
        }
        symbols.iter().filter(|s| !s.merged_away).map(|s| s.id).collect()
    }

    /// The word's characters as vocabulary ids; characters missing from the vocabulary become the
    /// unknown token (one per character, since CLIP does not fuse them) or vanish if there is none.
    fn initial_symbols(&self, word: &str) -> Vec<Symbol> {
        let char_count = word.chars().count();
        let ids: Vec<i64> = word
            .chars()
            .enumerate()
            .filter_map(|(i, c)| {
                let mut symbol = c.to_string();
                if i + 1 == char_count {
                    symbol.push_str(END_OF_WORD);
                }
                self.vocab.get(&symbol).copied().or(self.unk_id)
            })
            .collect();
        let last = ids.len().saturating_sub(1);
        ids.iter().enumerate().map(|(i, &id)| Symbol { id, prev: i.checked_sub(1), next: (i < last).then_some(i + 1), merged_away: false }).collect()
    }

    /// Queues the merge of the symbol at `pos` with its right neighbour, if the pair has one.
    fn queue_merge(&self, queue: &mut BinaryHeap<Reverse<QueuedMerge>>, symbols: &[Symbol], pos: usize) {
        let Some(next) = symbols[pos].next else {
            return;
        };
        if let Some(&(rank, new_id)) = self.merges.get(&(symbols[pos].id, symbols[next].id)) {
            queue.push(Reverse(QueuedMerge { rank, pos, new_id }));
        }
    }
}

/// `tokenizers`' CLIP normaliser: NFC, each run of whitespace to one space, then lower case character by
/// character (so a final capital sigma becomes `σ`, not `ς` as `str::to_lowercase` would give).
fn normalize(text: &str, whitespace: &Regex) -> String {
    let composed: String = text.nfc().collect();
    let spaced = whitespace.replace_all(&composed, " ");
    spaced.chars().flat_map(char::to_lowercase).collect()
}

/// Cuts `text` at every occurrence of an added token, taking at each position the leftmost, then
/// longest, match (the aho-corasick `LeftmostLongest` search `tokenizers` uses).
fn split_added<'a>(text: &'a str, added: &[AddedToken]) -> Vec<Segment<'a>> {
    let mut segments = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        let longest = added.iter().filter(|token| !token.content.is_empty() && rest.starts_with(&token.content)).max_by_key(|token| token.content.len());
        match longest {
            Some(token) => {
                if start < pos {
                    segments.push(Segment::Text(&text[start..pos]));
                }
                segments.push(Segment::Added(token.id));
                pos += token.content.len();
                start = pos;
            }
            None => pos += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    if start < text.len() {
        segments.push(Segment::Text(&text[start..]));
    }
    segments
}

/// GPT-2's reversible byte-to-unicode table: printable Latin-1 bytes stand for themselves, the others
/// are shifted to code points from U+0100 on so that every byte is a visible, non-space character.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("valid code point")
        };
    }
    table
}

fn read_json_if_present(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value = serde_json::from_str(&text).map_err(|e| Error::InvalidModel(format!("{}: not valid JSON: {e}", path.display())))?;
    Ok(Some(value))
}

fn vocab_from_json(value: &Value, path: &Path) -> Result<Vocab> {
    let object = value.as_object().ok_or_else(|| Error::InvalidModel(format!("{}: the vocabulary is not a JSON object", path.display())))?;
    // Without one, every text would become the same ids (the special tokens alone).
    if object.is_empty() {
        return Err(Error::InvalidModel(format!("{}: the vocabulary is empty", path.display())));
    }
    object
        .iter()
        .map(|(token, id)| match id.as_i64() {
            Some(id) if id >= 0 => Ok((token.clone(), id)),
            _ => Err(Error::InvalidModel(format!("{}: token `{token}` has id {id}", path.display()))),
        })
        .collect()
}

/// The SD 1.5 layout: `vocab.json` and `merges.txt` (whose `#version` line is a comment).
fn vocab_and_merges_from_files(dir: &Path) -> Result<(Vocab, MergeList)> {
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    if !vocab_path.exists() || !merges_path.exists() {
        return Err(Error::InvalidModel(format!("{}: no tokenizer.json, nor vocab.json with merges.txt", dir.display())));
    }
    let vocab = vocab_from_json(&read_json_if_present(&vocab_path)?.unwrap_or(Value::Null), &vocab_path)?;
    let text = std::fs::read_to_string(&merges_path).map_err(|e| Error::io(&merges_path, e))?;
    let merges = text
        .lines()
        .filter(|line| !line.starts_with("#version") && !line.is_empty())
        .map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
            [left, right] => Ok((left.to_string(), right.to_string())),
            _ => Err(Error::InvalidModel(format!("{}: bad merge line `{line}`", merges_path.display()))),
        })
        .collect::<Result<_>>()?;
    Ok((vocab, merges))
}

/// The `tokenizers` layout. Only the BPE model's vocabulary and merges are used: transformers'
/// `CLIPTokenizer` rebuilds its normaliser, pre-tokenizer and post-processor itself.
fn vocab_and_merges_from_tokenizer_json(json: &Value, path: &Path) -> Result<(Vocab, MergeList)> {
    let bad = |what: &str| Error::InvalidModel(format!("{}: {what}", path.display()));
    let model = json.get("model").ok_or_else(|| bad("no `model` section"))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            return Err(bad(&format!("a {kind} model, CLIP needs BPE")));
        }
    }
    let vocab = vocab_from_json(model.get("vocab").unwrap_or(&Value::Null), path)?;
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no BPE merges"))?
        .iter()
        .map(|merge| {
            // Older files store "left right", newer ones ["left", "right"].
            let parts: Option<Vec<&str>> = match merge {
                Value::String(line) => Some(line.split(' ').collect()),
                Value::Array(pair) => pair.iter().map(Value::as_str).collect(),
                _ => None,
            };
            match parts.as_deref() {
                Some([left, right]) => Ok((left.to_string(), right.to_string())),
                _ => Err(bad(&format!("bad merge {merge}"))),
            }
        })
        .collect::<Result<_>>()?;
    Ok((vocab, merges))
}

/// Ranks merges by their order; as in `tokenizers`, both halves and their concatenation must be in
/// the vocabulary, and a repeated pair keeps its last rank.
fn rank_merges(vocab: &Vocab, merges: &[(String, String)]) -> Result<HashMap<(i64, i64), (usize, i64)>> {
    let id =
        |token: &str| vocab.get(token).copied().ok_or_else(|| Error::InvalidModel(format!("tokenizer merge uses `{token}`, which is not in the vocabulary")));
    merges.iter().enumerate().map(|(rank, (left, right))| Ok(((id(left)?, id(right)?), (rank, id(&format!("{left}{right}"))?)))).collect()
}

/// Reads one special-token value. `special` is what transformers assumes when a dict does not say, and
/// decides the default of `normalized` (special tokens are matched in the raw text by default).
fn token_spec(value: &Value, special: bool, what: &str) -> Result<Option<TokenSpec>> {
    match value {
        Value::Null => Ok(None),
        Value::String(content) => Ok(Some(TokenSpec { content: content.clone(), normalized: false, from_string: true })),
        Value::Object(fields) => {
            let content = fields.get("content").and_then(Value::as_str).ok_or_else(|| Error::InvalidModel(format!("{what} has no `content`")))?;
            let special = fields.get("special").and_then(Value::as_bool).unwrap_or(special);
            let normalized = fields.get("normalized").and_then(Value::as_bool).unwrap_or(!special);
            Ok(Some(TokenSpec { content: content.to_string(), normalized, from_string: false }))
        }
        other => Err(Error::InvalidModel(format!("{what} is {other}, not a string or a token dict"))),
    }
}

/// The named special tokens (bos, eos, unk, pad, ...) as transformers resolves them: from
/// `tokenizer_config.json`, overridden by `special_tokens_map.json` unless the config carries an
/// `added_tokens_decoder` (transformers then ignores that legacy file: SD 2's pad "!" lives there).
fn special_tokens(dir: &Path, config: Option<&JsonObject>) -> Result<HashMap<String, TokenSpec>> {
    let mut specials = HashMap::new();
    for key in SPECIAL_KEYS {
        if let Some(value) = config.and_then(|c| c.get(key)) {
            if let Some(spec) = token_spec(value, false, &format!("tokenizer_config.json `{key}`"))? {
                specials.insert(key.to_string(), spec);
            }
        }
    }
    let map_path = dir.join("special_tokens_map.json");
    let legacy_map = match config.is_some_and(|c| c.contains_key("added_tokens_decoder")) {
        true => None,
        false => read_json_if_present(&map_path)?,
    };
    if let Some(map) = legacy_map {
        for key in SPECIAL_KEYS {
            if let Some(value) = map.get(key) {
                // transformers builds these dicts with special=True whatever they say.
                let value = match value {
                    Value::Object(fields) => {
                        let mut fields = fields.clone();
                        fields.insert("special".into(), Value::Bool(true));
                        Value::Object(fields)
                    }
                    other => other.clone(),
                };
                if let Some(spec) = token_spec(&value, true, &format!("special_tokens_map.json `{key}`"))? {
                    specials.insert(key.to_string(), spec);
                }
            }
        }
    }
    // `CLIPTokenizer`'s own defaults, passed as plain strings.
    for (key, content) in DEFAULT_SPECIALS {
        specials.entry(key.to_string()).or_insert_with(|| TokenSpec { content: content.to_string(), normalized: false, from_string: true });
    }
    Ok(specials)
}

/// Added tokens the folder declares explicitly, by id: `added_tokens_decoder` in the config, or else
/// tokenizer.json's `added_tokens`.
fn declared_added_tokens(config: Option<&JsonObject>, tokenizer_json: Option<&Value>) -> Result<Vec<(i64, TokenSpec)>> {
    let mut declared = Vec::new();
    if let Some(decoder) = config.and_then(|c| c.get("added_tokens_decoder")) {
        let decoder = decoder.as_object().ok_or_else(|| Error::InvalidModel("tokenizer_config.json `added_tokens_decoder` is not an object".into()))?;
        for (id, value) in decoder {
            let id = id.parse().map_err(|_| Error::InvalidModel(format!("tokenizer_config.json: added token id `{id}`")))?;
            if let Some(spec) = token_spec(value, false, &format!("added token {id}"))? {
                declared.push((id, spec));
            }
        }
    } else if let Some(added) = tokenizer_json.and_then(|json| json.get("added_tokens")).and_then(Value::as_array) {
        for value in added {
            let id = value.get("id").and_then(Value::as_i64).ok_or_else(|| Error::InvalidModel(format!("tokenizer.json: added token without id: {value}")))?;
            if let Some(spec) = token_spec(value, false, &format!("added token {id}"))? {
                declared.push((id, spec));
            }
        }
    }
    declared.sort_by_key(|(id, _)| *id);
    Ok(declared)
}

/// Which tokens are cut out before BPE, with their ids and whether they match the normalised text.
///
/// This replays transformers' construction: the declared tokens in id order, then each named special
/// token whose content is not declared (a value equal to one already queued is skipped; a plain string
/// means "match in the raw text"), all added in one call where the last entry for a content sets its
/// flag. That is why SD 1.5's `<|endoftext|>` ends up matched in the raw text (its string pad token
/// comes after the eos dict) while `<|startoftext|>` also matches case-insensitively.
fn resolve_added_tokens(vocab: &Vocab, declared: &[(i64, TokenSpec)], specials: &HashMap<String, TokenSpec>) -> Vec<AddedToken> {
    let mut queued: Vec<(Option<i64>, TokenSpec)> = declared.iter().map(|(id, spec)| (Some(*id), spec.clone())).collect();
    for key in SPECIAL_KEYS {
        let Some(spec) = specials.get(key) else {
            continue;
        };
        let declared_content = declared.iter().any(|(_, d)| d.content == spec.content);
        if !declared_content && !queued.iter().any(|(_, q)| q == spec) {
            queued.push((None, spec.clone()));
        }
    }
    let mut next_free_id = vocab.values().chain(declared.iter().map(|(id, _)| id)).max().map_or(0, |max| max + 1);
    let mut added: Vec<AddedToken> = Vec::new();
    for (declared_id, spec) in queued {
        if let Some(existing) = added.iter_mut().find(|token| token.content == spec.content) {
            existing.normalized = spec.normalized;
            continue;
        }
        // `add_tokens` keeps a token's vocabulary id; only tokens outside the vocabulary need another.
        let id = match vocab.get(&spec.content) {
            Some(&id) => id,
            None => declared_id.unwrap_or_else(|| {
                next_free_id += 1;
                next_free_id - 1
            }),
        };
        added.push(AddedToken { content: spec.content, id, normalized: spec.normalized });
    }
    added
}

/// `model_max_length` from the config; absent, null or transformers' "unlimited" (1e30) mean 77.
fn max_length(config: Option<&JsonObject>, dir: &Path) -> Result<usize> {
    let Some(value) = config.and_then(|c| c.get("model_max_length")).filter(|v| !v.is_null()) else {
        return Ok(DEFAULT_MAX_LENGTH);
    };
    // 1e30 is stored as a float (or an integer too large for u64).
    let length = value.as_u64().or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f.min(u64::MAX as f64) as u64));
    match length {
        Some(length) if length > UNSET_MAX_LENGTH_ABOVE => Ok(DEFAULT_MAX_LENGTH),
        Some(length) if length >= 2 => Ok(length as usize),
        _ => Err(Error::InvalidModel(format!("{}: model_max_length {value} leaves no room for the start and end tokens", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    /// A folder under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("diffmine-tokenizer-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn write(&self, file: &str, contents: &str) {
            std::fs::write(self.0.join(file), contents).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const MERGES: [(&str, &str); 6] = [("ab", "a"), ("a", "b"), ("h", "e"), ("l", "o</w>"), ("he", "l"), ("hel", "lo</w>")];

    /// A CLIP-shaped vocabulary: the 256 byte symbols, the same with `</w>`, the merge results, then
    /// the two special tokens, in CLIP's order.
    fn vocab() -> Vocab {
        let bytes: Vec<String> = bytes_to_unicode().iter().map(char::to_string).collect();
        let with_suffix = bytes.iter().map(|b| format!("{b}{END_OF_WORD}"));
        let merged = MERGES.iter().map(|(left, right)| format!("{left}{right}"));
        let specials = ["<|startoftext|>", "<|endoftext|>"].map(String::from);
        let tokens: Vec<String> = bytes.clone().into_iter().chain(with_suffix).chain(merged).chain(specials).collect();
        tokens.into_iter().enumerate().map(|(id, token)| (token, id as i64)).collect()
    }

    /// SD 1.5's layout: vocab.json, merges.txt and nothing else.
    fn vocab_and_merges_dir(name: &str) -> TempDir {
        let dir = TempDir::new(name);
        dir.write("vocab.json", &serde_json::to_string(&vocab()).unwrap());
        let lines: Vec<String> = MERGES.iter().map(|(left, right)| format!("{left} {right}")).collect();
        dir.write("merges.txt", &format!("#version: 0.2\n{}\n", lines.join("\n")));
        dir
    }

    fn id(token: &str) -> i64 {
        vocab()[token]
    }

    #[test]
    fn wraps_bpe_tokens_in_start_and_end_tokens_then_pads() {
        let dir = vocab_and_merges_dir("wraps");
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        let ids = tokenizer.encode("hello");
        assert_eq!(tokenizer.max_length(), 77);
        assert_eq!(ids.len(), 77);
        assert_eq!(&ids[..3], &[id("<|startoftext|>"), id("hello</w>"), id("<|endoftext|>")]);
        assert!(ids[3..].iter().all(|&pad| pad == id("<|endoftext|>")));
        assert_eq!(tokenizer.pad_id(), id("<|endoftext|>"));
        assert_eq!(&tokenizer.encode("")[..2], &[id("<|startoftext|>"), id("<|endoftext|>")]);
    }

    #[test]
    fn ignores_case_and_whitespace_runs() {
        let dir = vocab_and_merges_dir("case");
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        assert_eq!(tokenizer.encode("  HeLLo \t\n\u{3000} HELLO  "), tokenizer.encode("hello hello"));
        assert_eq!(tokenizer.tokenize("HELLO HELLO"), vec![id("hello</w>"); 2]);
    }

    #[test]
    fn splits_contractions_punctuation_and_digits() {
        let dir = vocab_and_merges_dir("split");
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        // "!?" is one word, so only its last symbol carries `</w>`; digits are words on their own.
        let expected = ["d", "o", "n</w>", "'", "t</w>", "!", "?</w>", "4</w>", "2</w>"];
        assert_eq!(tokenizer.tokenize("DON'T!? 42"), expected.map(id));
    }

    #[test]
    fn spells_non_ascii_text_as_utf8_bytes() {
        let dir = vocab_and_merges_dir("bytes");
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        // "é" is bytes C3 A9, spelt `Ã` and `©` in GPT-2's byte alphabet; NFC composes "e\u{301}" first.
        assert_eq!(tokenizer.tokenize("É"), vec![id("Ã"), id("©</w>")]);
        assert_eq!(tokenizer.tokenize("e\u{301}"), tokenizer.tokenize("é"));
    }

    #[test]
    fn applies_merges_in_queue_order_like_tokenizers() {
        let dir = vocab_and_merges_dir("order");
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        // "a b" merges first, then the lower-ranked "ab a" takes the next `a` before the second
        // "a b" is reached: [aba, b</w>], not [ab, ab</w>].
        assert_eq!(tokenizer.tokenize("abab"), vec![id("aba"), id("b</w>")]);
    }

    #[test]
    fn truncates_long_text_but_keeps_the_end_token() {
        let dir = vocab_and_merges_dir("truncate");
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        let ids = tokenizer.encode(&"hello ".repeat(100));
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], id("<|startoftext|>"));
        assert!(ids[1..76].iter().all(|&token| token == id("hello</w>")));
        assert_eq!(ids[76], id("<|endoftext|>"));
    }

    #[test]
    fn matches_special_tokens_typed_in_the_text() {
        let dir = vocab_and_merges_dir("specials");
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        assert_eq!(tokenizer.tokenize("hello<|startoftext|>hello"), vec![id("hello</w>"), id("<|startoftext|>"), id("hello</w>")]);
        // Plain-string special tokens match the raw text only, so the upper-case spelling is just text.
        assert_eq!(tokenizer.tokenize("<|STARTOFTEXT|>")[..3], [id("<"), id("|</w>"), id("s")][..]);
    }

    #[test]
    fn reads_pad_token_and_length_from_config_files() {
        let dir = vocab_and_merges_dir("sd2");
        let eos = json!({"__type": "AddedToken", "content": "<|endoftext|>", "normalized": true});
        let config = json!({"bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "normalized": true},
            "eos_token": eos, "unk_token": eos, "pad_token": "<|endoftext|>", "model_max_length": 16});
        dir.write("tokenizer_config.json", &config.to_string());
        // SD 2.x: the legacy map overrides the config's pad token.
        dir.write("special_tokens_map.json", &json!({"pad_token": "!"}).to_string());
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        assert_eq!(tokenizer.max_length(), 16);
        assert_eq!(tokenizer.pad_id(), id("!"));
        let ids = tokenizer.encode("hello");
        assert_eq!(ids.len(), 16);
        assert_eq!(&ids[..4], &[id("<|startoftext|>"), id("hello</w>"), id("<|endoftext|>"), id("!")]);
        // As in transformers 5, the pad token becomes an added token: "!" in a prompt is the pad id.
        assert_eq!(tokenizer.tokenize("hello!"), vec![id("hello</w>"), id("!")]);
        // The `normalized` eos dict matches after lower-casing.
        assert_eq!(tokenizer.tokenize("<|EndOfText|>"), vec![id("<|endoftext|>")]);
    }

    #[test]
    fn ignores_special_tokens_map_when_config_has_added_tokens_decoder() {
        let dir = vocab_and_merges_dir("decoder");
        let eos = json!({"content": "<|endoftext|>", "normalized": false, "special": true});
        let config = json!({"added_tokens_decoder": {id("<|endoftext|>").to_string(): eos}, "model_max_length": 1e30});
        dir.write("tokenizer_config.json", &config.to_string());
        dir.write("special_tokens_map.json", &json!({"pad_token": "!"}).to_string());
        let tokenizer = ClipTokenizer::from_dir(&dir.0).unwrap();
        assert_eq!(tokenizer.pad_id(), id("<|endoftext|>"));
        assert_eq!(tokenizer.max_length(), 77);
    }

    #[test]
    fn tokenizer_json_layout_gives_the_same_ids() {
        let files = vocab_and_merges_dir("layout-files");
        let json_only = TempDir::new("layout-json");
        let merges: Vec<[&str; 2]> = MERGES.iter().map(|(left, right)| [*left, *right]).collect();
        let added = |content: &str| {
            json!({"id": id(content), "content": content, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        };
        let tokenizer_json = json!({
            "added_tokens": [added("<|startoftext|>"), added("<|endoftext|>")],
            "model": {"type": "BPE", "vocab": vocab(), "merges": merges, "end_of_word_suffix": "</w>"},
        });
        json_only.write("tokenizer.json", &tokenizer_json.to_string());
        let from_files = ClipTokenizer::from_dir(&files.0).unwrap();
        let from_json = ClipTokenizer::from_dir(&json_only.0).unwrap();
        for text in ["hello", "Hello, abab! don't <|endoftext|> café 日本 😀", ""] {
            assert_eq!(from_files.encode(text), from_json.encode(text), "{text:?}");
        }
    }

    #[test]
    fn rejects_missing_or_inconsistent_files() {
        let empty = TempDir::new("empty");
        assert!(matches!(ClipTokenizer::from_dir(&empty.0), Err(Error::InvalidModel(_))));

        let bad_merge = vocab_and_merges_dir("bad-merge");
        bad_merge.write("merges.txt", "#version: 0.2\nq z\n");
        assert!(matches!(ClipTokenizer::from_dir(&bad_merge.0), Err(Error::InvalidModel(_))));

        let bad_json = vocab_and_merges_dir("bad-json");
        bad_json.write("tokenizer_config.json", "{not json");
        assert!(matches!(ClipTokenizer::from_dir(&bad_json.0), Err(Error::InvalidModel(_))));
    }
}
