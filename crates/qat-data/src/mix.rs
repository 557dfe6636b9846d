//! Weighted mixing of categories and packing of documents into fixed-length rows.
//!
//! Each row is filled with document pieces. The next piece comes from the category whose
//! token share lags its weight the most (largest `w_c·total − placed_c`), then from the
//! source in that category that lags most; so realised shares track the weights to within one
//! piece at every point of a run, deterministically. Documents of a source are visited in a
//! seeded random order, reshuffled every epoch. A document that does not fit is continued at
//! the start of the next row. Every piece is its own attention segment: attention never
//! crosses documents, and RoPE positions restart at each piece.
//!
//! The whole sampling state is [`MixerState`] (counters only; orders are recomputed from the
//! seed), so a checkpoint can store it and a resumed run continues with identical batches.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::source::SourceConfig;
use crate::tokenized::TokenizedSource;

/// The `[data]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Tokens per training row.
    pub seq_len: usize,
    /// Category weights; every category used by a source must have one.
    pub mix: BTreeMap<String, f64>,
    pub sources: Vec<SourceConfig>,
    /// Fraction of each source's documents held out for validation.
    #[serde(default = "val_fraction")]
    pub val_fraction: f64,
    /// Where tokenized sources are cached (default `.qat-cache` in the working directory).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn val_fraction() -> f64 {
    0.02
}

/// One packed batch of rows of `seq_len` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub seq_len: usize,
    pub tokens: Vec<u32>,
    /// Next-token target for each position, or −1 where there is none or it carries no loss.
    pub targets: Vec<i64>,
    /// Document piece index of each position (attention stays within a piece).
    pub segments: Vec<Vec<u32>>,
    /// Tokens placed per category (by category index).
    pub category_tokens: Vec<u64>,
}

impl Batch {
    /// Positions with a target.
    pub fn n_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t >= 0).count()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceCursor {
    pub epoch: u64,
    /// Index into this epoch's document order.
    pub pos: usize,
    /// Tokens of the current document already used.
    pub partial: usize,
}

/// Everything needed to continue sampling exactly where a run stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MixerState {
    pub cursors: Vec<SourceCursor>,
    pub category_tokens: Vec<u64>,
    pub source_tokens: Vec<u64>,
    pub total_tokens: u64,
}

struct Category {
    name: String,
    weight: f64,
    sources: Vec<usize>,
}

/// Train/validation document split of one source.
struct SplitSource {
    data: TokenizedSource,
    train: Vec<usize>,
    val: Vec<usize>,
    /// Weight within its category, normalised.
    weight: f64,
}

/// The training sampler.
pub struct Mixer {
    sources: Vec<SplitSource>,
    categories: Vec<Category>,
    seq_len: usize,
    seed: u64,
    pub state: MixerState,
    orders: Vec<(u64, Vec<usize>)>,
}

/// A stable per-document hash deciding the validation split (independent of the run seed, so
/// every run of a config sees the same validation documents).
fn split_hash(name: &str, doc: usize) -> f64 {
    let mut x = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3)) ^ (doc as u64).wrapping_mul(0x9E3779B97F4A7C15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Mixer {
    /// Builds the sampler from tokenized sources (in config order) and category weights.
    pub fn new(sources: Vec<TokenizedSource>, mix: &BTreeMap<String, f64>, seq_len: usize, val_fraction: f64, seed: u64) -> Result<Self, DataError> {
        let cfg_err = |msg: String| DataError::Config(msg);
        if seq_len < 2 {
            return Err(cfg_err(format!("data.seq_len = {seq_len}: must be at least 2")));
        }
        if !(0.0..0.5).contains(&val_fraction) {
            return Err(cfg_err(format!("data.val_fraction = {val_fraction}: must be in [0, 0.5)")));
        }
        let mut categories: Vec<Category> = Vec::new();
        for (name, &w) in mix {
            if !(w.is_finite() && w >= 0.0) {
                return Err(cfg_err(format!("data.mix.{name} = {w}: weights must be finite and non-negative")));
            }
            categories.push(Category { name: name.clone(), weight: w, sources: Vec::new() });
        }
        let mut split = Vec::new();
        for (i, s) in sources.into_iter().enumerate() {
            let Some(c) = categories.iter_mut().find(|c| c.name == s.category) else {
                return Err(cfg_err(format!("data.sources[{i}] ({}): category `{}` has no weight in data.mix", s.name, s.category)));
            };
            if !(s.weight.is_finite() && s.weight > 0.0) {
                return Err(cfg_err(format!("data.sources[{i}] ({}): weight {} must be positive", s.name, s.weight)));
            }
            c.sources.push(i);
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for d in 0..s.n_docs() {
                if split_hash(&s.name, d) < val_fraction { val.push(d) } else { train.push(d) }
            }
            if train.is_empty() || (val_fraction > 0.0 && val.is_empty()) {
                return Err(cfg_err(format!(
                    "data.sources[{i}] ({}): {} documents cannot be split into train and validation with val_fraction {val_fraction}; add documents or change the split",
                    s.name,
                    s.n_docs()
                )));
            }
            split.push(SplitSource { weight: s.weight, data: s, train, val });
        }
        for c in &categories {
            if c.weight > 0.0 && c.sources.is_empty() {
                return Err(cfg_err(format!("data.mix.{} has weight {} but no source has that category", c.name, c.weight)));
            }
            let total: f64 = c.sources.iter().map(|&s| split[s].weight).sum();
            for &s in &c.sources {
                split[s].weight /= total;
            }
        }
        let total_w: f64 = categories.iter().map(|c| c.weight).sum();
        if total_w <= 0.0 {
            return Err(cfg_err("data.mix: at least one category needs a positive weight".into()));
        }
        categories.iter_mut().for_each(|c| c.weight /= total_w);
        let n = split.len();
        let state =
            MixerState { cursors: vec![SourceCursor::default(); n], category_tokens: vec![0; categories.len()], source_tokens: vec![0; n], total_tokens: 0 };
        Ok(Mixer { sources: split, categories, seq_len, seed, state, orders: vec![(u64::MAX, Vec::new()); n] })
    }

    pub fn category_names(&self) -> Vec<&str> {
        self.categories.iter().map(|c| c.name.as_str()).collect()
    }

    /// Normalised category weights.
    pub fn category_weights(&self) -> Vec<f64> {
        self.categories.iter().map(|c| c.weight).collect()
    }

    pub fn source_names(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.data.name.as_str()).collect()
    }

    /// Restores a saved sampling state (from a checkpoint of the same config).
    pub fn restore(&mut self, state: MixerState) -> Result<(), DataError> {
        if state.cursors.len() != self.sources.len() || state.category_tokens.len() != self.categories.len() {
            return Err(DataError::Config("the checkpoint's data state does not match this config's sources".into()));
        }
        self.state = state;
        Ok(())
    }

    fn order(&mut self, s: usize, epoch: u64) -> &[usize] {
        if self.orders[s].0 != epoch {
            let mut order = self.sources[s].train.clone();
            let seed = self.seed ^ (s as u64).wrapping_mul(0x9E3779B97F4A7C15) ^ epoch.wrapping_mul(0xD1B54A32D192ED03);
            order.shuffle(&mut StdRng::seed_from_u64(seed));
            self.orders[s] = (epoch, order);
        }
        &self.orders[s].1
    }

    fn argmax_deficit(weights: impl Iterator<Item = (usize, f64, u64)>, total: u64) -> usize {
        let mut best = (usize::MAX, f64::NEG_INFINITY);
        for (i, w, placed) in weights {
            if w <= 0.0 {
                continue;
            }
            let deficit = w * (total + 1) as f64 - placed as f64;
            if deficit > best.1 {
                best = (i, deficit);
            }
        }
        best.0
    }

    /// The next `rows` training rows.
    pub fn next_batch(&mut self, rows: usize) -> Batch {
        let t = self.seq_len;
        let mut b = Batch {
            rows,
            seq_len: t,
            tokens: Vec::with_capacity(rows * t),
            targets: Vec::with_capacity(rows * t),
            segments: Vec::new(),
            category_tokens: vec![0; self.categories.len()],
        };
        for _ in 0..rows {
            let mut seg = Vec::with_capacity(t);
            let mut piece = 0u32;
            while seg.len() < t {
                let st = &self.state;
                let c = Self::argmax_deficit(self.categories.iter().enumerate().map(|(i, c)| (i, c.weight, st.category_tokens[i])), st.total_tokens);
                let cat_total = st.category_tokens[c];
                let s = Self::argmax_deficit(self.categories[c].sources.iter().map(|&s| (s, self.sources[s].weight, st.source_tokens[s])), cat_total);
                let cur = self.state.cursors[s].clone();
                let doc = self.order(s, cur.epoch)[cur.pos];
                let range = self.sources[s].data.doc(doc);
                let start = range.start + cur.partial;
                let n = (range.end - start).min(t - seg.len());
                let data = &self.sources[s].data;
                for j in start..start + n {
                    b.tokens.push(data.token(j));
                    let target = if j + 1 < range.end && data.has_loss(j + 1) { data.token(j + 1) as i64 } else { -1 };
                    b.targets.push(target);
                    seg.push(piece);
                }
                piece += 1;
                let cursor = &mut self.state.cursors[s];
                if start + n == range.end {
                    cursor.partial = 0;
                    cursor.pos += 1;
                    if cursor.pos == self.sources[s].train.len() {
                        cursor.pos = 0;
                        cursor.epoch += 1;
                    }
                } else {
                    cursor.partial += n;
                }
                self.state.category_tokens[c] += n as u64;
                self.state.source_tokens[s] += n as u64;
                self.state.total_tokens += n as u64;
                b.category_tokens[c] += n as u64;
            }
            b.segments.push(seg);
        }
        b
    }

    /// Validation rows of source `s`: its held-out documents packed in order (at most
    /// `max_rows`), or `None` when it has no validation documents.
    pub fn validation_batch(&self, s: usize, max_rows: usize) -> Option<Batch> {
        let src = &self.sources[s];
        if src.val.is_empty() || max_rows == 0 {
            return None;
        }
        let t = self.seq_len;
        let mut b =
            Batch { rows: 0, seq_len: t, tokens: Vec::new(), targets: Vec::new(), segments: Vec::new(), category_tokens: vec![0; self.categories.len()] };
        let mut seg = Vec::new();
        let mut piece = 0u32;
        'docs: for &d in &src.val {
            let range = src.data.doc(d);
            let mut j = range.start;
            while j < range.end {
                let n = (range.end - j).min(t - seg.len());
                for k in j..j + n {
                    b.tokens.push(src.data.token(k));
                    b.targets.push(if k + 1 < range.end && src.data.has_loss(k + 1) { src.data.token(k + 1) as i64 } else { -1 });
                    seg.push(piece);
                }
                piece += 1;
                j += n;
                if seg.len() == t {
                    b.segments.push(std::mem::take(&mut seg));
                    b.rows += 1;
                    piece = 0;
                    if b.rows == max_rows {
                        break 'docs;
                    }
                }
            }
        }
        // A last, partly filled row is dropped.
        b.tokens.truncate(b.rows * t);
        b.targets.truncate(b.rows * t);
        (b.rows > 0).then_some(b)
    }
}
