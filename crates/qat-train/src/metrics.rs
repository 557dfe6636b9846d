//! A run's metrics: one typed [`Record`] per line of `RUN_DIR/metrics.jsonl` (and, with
//! `[output] tensorboard`, as TensorBoard scalars), written by [`MetricsLog`] and read back by
//! the chart ([`crate::plot`]) and by resume ([`truncate`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::TrainError;
use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// One optimizer step.
    Train(TrainStep),
    /// An evaluation of the quantized model (step 0: before end-to-end training).
    Eval(Evaluation),
    /// The evaluation of the unquantized starting model (step 0).
    EvalFp(Evaluation),
    /// A step whose loss or gradient norm was not finite, so nothing was applied; the values as
    /// text (`NaN`, `inf` have no JSON number).
    Skipped { step: usize, loss: String, grad_norm: String },
}

/// What one optimizer step measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStep {
    pub step: usize,
    /// Training tokens seen so far (all steps).
    pub tokens: u64,
    /// The objective: `ce_weight · ce + kd_weight · kd`.
    pub loss: f64,
    /// Cross-entropy per target token.
    pub ce: f64,
    /// The distillation term per target token, when a teacher is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kd: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_second: f64,
    pub step_seconds: f64,
    /// Training tokens so far per data category.
    pub category_tokens: BTreeMap<String, u64>,
}

/// An evaluation at `step`: `eval` maps `val_loss`, `val_loss/<source>`, `ppl/<file>`,
/// `<task>/acc`, … to their values (see [`crate::train::evaluate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub step: usize,
    pub tokens: u64,
    pub eval: qat_eval::Report,
}

impl Record {
    pub fn step(&self) -> usize {
        match self {
            Record::Train(t) => t.step,
            Record::Eval(e) | Record::EvalFp(e) => e.step,
            Record::Skipped { step, .. } => *step,
        }
    }
}

/// The records of a `metrics.jsonl` text; lines that are no record (e.g. a line cut short by a
/// crash) are skipped.
pub fn read(text: &str) -> impl Iterator<Item = Record> + '_ {
    text.lines().filter_map(|l| serde_json::from_str(l).ok())
}

/// `metrics.jsonl`, and its TensorBoard mirror when `[output] tensorboard` is on.
pub struct MetricsLog {
    pub file: std::fs::File,
    pub tensorboard: Option<crate::tensorboard::EventWriter>,
}

impl MetricsLog {
    pub fn write(&mut self, rec: &Record) -> Result<(), TrainError> {
        let v = serde_json::to_value(rec).expect("a metrics record is JSON");
        writeln!(self.file, "{v}").and_then(|()| self.file.flush()).map_err(|e| TrainError::Run(format!("writing metrics: {e}")))?;
        match &mut self.tensorboard {
            Some(tb) => tb.record(&v),
            None => Ok(()),
        }
    }
}

/// Drops the records after `step` (written by an interrupted run past its last checkpoint).
pub fn truncate(path: &Path, step: usize) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text.lines().filter(|l| serde_json::from_str::<Record>(l).is_ok_and(|r| r.step() <= step)).collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| TrainError::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON lines keep the shape earlier runs wrote (`"type"` tag, the same keys), so a
    /// record reads back as itself and old files stay readable.
    #[test]
    fn records_round_trip_in_the_metrics_shape() {
        let line = r#"{"category_tokens":{"chat":10},"ce":2.5,"grad_norm":1.0,"kd":0.5,"loss":3.0,"lr":0.001,"step":3,"step_seconds":0.5,"tokens":12,"tokens_per_second":24.0,"type":"train"}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        assert!(matches!(&r, Record::Train(t) if t.kd == Some(0.5) && t.category_tokens["chat"] == 10));
        assert_eq!(serde_json::to_value(&r).unwrap(), serde_json::from_str::<serde_json::Value>(line).unwrap());
        let eval = r#"{"eval":{"val_loss":2.0},"step":0,"tokens":0,"type":"eval_fp"}"#;
        assert!(matches!(serde_json::from_str::<Record>(eval).unwrap(), Record::EvalFp(e) if e.eval.val_loss == Some(2.0)));
        let skipped = r#"{"grad_norm":"NaN","loss":"inf","step":7,"type":"skipped"}"#;
        assert_eq!(serde_json::from_str::<Record>(skipped).unwrap().step(), 7);
        let text = format!("{line}\nnot json\n{eval}\n");
        assert_eq!(read(&text).count(), 2);
    }
}
