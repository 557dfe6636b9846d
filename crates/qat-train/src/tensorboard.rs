//! TensorBoard event files (`[output] tensorboard = true` → `RUN_DIR/tb/`), so `tensorboard
//! --logdir runs/` compares runs and sweeps. Every record written to `metrics.jsonl` becomes
//! scalars: its numeric fields, nested ones joined by `/` and prefixed by the record's type
//! (`train/loss`, `eval/ppl/wikitext2_test`, `eval_fp/val_loss`), at the record's step.
//!
//! The file is TensorFlow's TFRecord framing of `Event` protocol buffers: per record the
//! length (u64 LE), its masked CRC-32C, the bytes, their masked CRC-32C, with
//! `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`. The first event carries
//! `file_version = "brain.Event:2"`. A resumed run opens a new file that starts with
//! `SessionLog { status: START }` at the first step it will write, which makes TensorBoard drop
//! the older file's events from that step on — as `metrics.jsonl` is truncated there.

use crate::TrainError;
use std::io::Write;
use std::path::Path;

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
    /// Field 7 (6 is `log_message`).
    #[prost(message, optional, tag = "7")]
    session_log: Option<SessionLog>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionLog {
    /// 1 = START.
    #[prost(int32, tag = "1")]
    status: i32,
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its checksum, the data, its checksum.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// An open event file.
pub struct EventWriter {
    file: std::fs::File,
    path: std::path::PathBuf,
    clock: Box<dyn Fn() -> f64>,
}

impl EventWriter {
    /// A new event file in `dir` (`events.out.tfevents.<seconds>.qat.<pid>`), its version
    /// event written.
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        Self::with_clock(dir, Box::new(now))
    }

    /// As [`EventWriter::create`] with the wall times taken from `clock` (tests).
    pub fn with_clock(dir: &Path, clock: Box<dyn Fn() -> f64>) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
        let t0 = clock();
        let path = dir.join(format!("events.out.tfevents.{}.qat.{}", t0 as u64, std::process::id()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| TrainError::file(&path, e))?;
        let mut w = EventWriter { file, path, clock };
        w.write(Event { wall_time: t0, file_version: Some("brain.Event:2".into()), ..Default::default() })?;
        Ok(w)
    }

    fn event(&self, step: usize) -> Event {
        Event { wall_time: (self.clock)(), step: step as i64, ..Default::default() }
    }

    fn write(&mut self, e: Event) -> Result<(), TrainError> {
        use prost::Message;
        self.file.write_all(&record(&e.encode_to_vec())).and_then(|()| self.file.flush()).map_err(|e| TrainError::file(&self.path, e))
    }

    /// Marks a restart whose first record is at `step`: TensorBoard discards the earlier
    /// files' events at `step` and after (its purge keeps steps below a `START`).
    pub fn restart(&mut self, step: usize) -> Result<(), TrainError> {
        self.write(Event { session_log: Some(SessionLog { status: 1 }), ..self.event(step) })
    }

    /// Scalars `(tag, value)` at `step`, in one event.
    pub fn scalars(&mut self, step: usize, values: &[(String, f64)]) -> Result<(), TrainError> {
        if values.is_empty() {
            return Ok(());
        }
        let value = values.iter().map(|(tag, v)| SummaryValue { tag: tag.clone(), simple_value: Some(*v as f32) }).collect();
        self.write(Event { summary: Some(Summary { value }), ..self.event(step) })
    }

    /// A `metrics.jsonl` record as scalars (module docs).
    pub fn record(&mut self, rec: &serde_json::Value) -> Result<(), TrainError> {
        let step = rec.get("step").and_then(|s| s.as_u64()).unwrap_or(0) as usize;
        let kind = rec.get("type").and_then(|t| t.as_str()).unwrap_or("train");
        self.scalars(step, &record_scalars(kind, rec))
    }
}

/// A record's numeric fields as `(type/key/…, value)`, its `step` and `type` left out and its
/// `eval` payload merged into the record's level (`eval/val_loss`, `eval_fp/val_loss`).
fn record_scalars(kind: &str, rec: &serde_json::Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (k, v) in rec.as_object().into_iter().flatten() {
        match k.as_str() {
            "step" | "type" => {}
            "eval" => flatten(kind, v, &mut out),
            _ => flatten(&format!("{kind}/{k}"), v, &mut out),
        }
    }
    out
}

/// Numeric leaves of `v` as `(prefix/key/…, value)`.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                flatten(&format!("{prefix}/{k}"), x, out);
            }
        }
        serde_json::Value::Number(n) => out.extend(n.as_f64().map(|x| (prefix.to_string(), x))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC-32C's check value, and the masking TensorFlow applies.
    #[test]
    fn checksums_are_tensorflows() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // ((c >> 15) | (c << 17)) + 0xa282ead8, computed independently.
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn records_flatten_to_tagged_scalars() {
        let rec = serde_json::json!({"type": "eval", "step": 4, "tokens": 100, "eval": {"val_loss": 2.5, "ppl/wiki": 12.0, "note": "x"}});
        let out = record_scalars("eval", &rec);
        assert_eq!(out, vec![("eval/ppl/wiki".to_string(), 12.0), ("eval/val_loss".to_string(), 2.5), ("eval/tokens".to_string(), 100.0)]);
        let rec = serde_json::json!({"type": "train", "step": 1, "loss": 3.0, "category_tokens": {"chat": 64}});
        assert_eq!(record_scalars("train", &rec), vec![("train/category_tokens/chat".to_string(), 64.0), ("train/loss".to_string(), 3.0)]);
        let rec = serde_json::json!({"type": "eval_fp", "step": 0, "eval": {"val_loss": 1.5}});
        assert_eq!(record_scalars("eval_fp", &rec), vec![("eval_fp/val_loss".to_string(), 1.5)]);
    }
}
