//! What one evaluation of a model measured, as one typed value that a run's metrics, its
//! summary, its stage reports, sweeps, charts and TensorBoard all read.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::McResult;

/// An evaluation: validation loss, perplexities and zero-shot task scores.
///
/// Written as one flat JSON object of named numbers, the names sweeps (`metric = "…"`),
/// charts and TensorBoard use: `val_loss`, `val_loss/SOURCE`, `ppl/FILE`, `TASK/acc`,
/// `TASK/acc_stderr`, `TASK/acc_norm`, `TASK/acc_norm_stderr`, `TASK/perplexity`, `TASK/n`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Mean token NLL over the validation rows of every source.
    pub val_loss: Option<f64>,
    /// The same per source (by the source's name).
    pub val_loss_by_source: BTreeMap<String, f64>,
    /// Sliding-window perplexity per text file (by file stem).
    pub perplexity: BTreeMap<String, f64>,
    /// Multiple-choice and LAMBADA-style tasks by name.
    pub tasks: BTreeMap<String, McResult>,
}

impl Report {
    /// Every number by its flat name, in the order they are written.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self.val_loss_by_source.iter().map(|(s, v)| (format!("val_loss/{s}"), *v)).collect();
        out.extend(self.val_loss.map(|v| ("val_loss".to_string(), v)));
        out.extend(self.perplexity.iter().map(|(f, v)| (format!("ppl/{f}"), *v)));
        for (name, r) in &self.tasks {
            let fields = [("acc", Some(r.acc)), ("acc_stderr", Some(r.acc_stderr)), ("acc_norm", r.acc_norm), ("acc_norm_stderr", r.acc_norm_stderr)];
            out.extend(fields.into_iter().filter_map(|(k, v)| Some((format!("{name}/{k}"), v?))));
            out.extend(r.perplexity.map(|p| (format!("{name}/perplexity"), p)));
            out.push((format!("{name}/n"), r.n as f64));
        }
        out
    }

    /// One number by its flat name (`val_loss`, `ppl/wikitext2_test`, `arc_easy/acc_norm`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = serde_json::Map::new();
        for (k, v) in self.metrics() {
            // Counts stay integers in the JSON.
            let value = if k.ends_with("/n") { serde_json::Value::from(v as u64) } else { serde_json::Value::from(v) };
            map.insert(k, value);
        }
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Report {
    /// The flat object [`Serialize`] writes; `null` (a run's state before its first evaluation)
    /// is the empty report, and a `null` number is NaN (JSON has no NaN: a diverged model's
    /// loss is written as `null`). An unknown name is an error.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = Option::<BTreeMap<String, Option<f64>>>::deserialize(d)?.unwrap_or_default();
        let mut r = Report::default();
        for (k, v) in map {
            let v = v.unwrap_or(f64::NAN);
            if k == "val_loss" {
                r.val_loss = Some(v);
            } else if let Some(s) = k.strip_prefix("val_loss/") {
                r.val_loss_by_source.insert(s.to_string(), v);
            } else if let Some(f) = k.strip_prefix("ppl/") {
                r.perplexity.insert(f.to_string(), v);
            } else if let Some((task, field)) = k.rsplit_once('/') {
                let t = r.tasks.entry(task.to_string()).or_insert(McResult {
                    n: 0,
                    acc: f64::NAN,
                    acc_stderr: f64::NAN,
                    acc_norm: None,
                    acc_norm_stderr: None,
                    perplexity: None,
                });
                match field {
                    "n" => t.n = v as usize,
                    "acc" => t.acc = v,
                    "acc_stderr" => t.acc_stderr = v,
                    "acc_norm" => t.acc_norm = Some(v),
                    "acc_norm_stderr" => t.acc_norm_stderr = Some(v),
                    "perplexity" => t.perplexity = Some(v),
                    _ => return Err(D::Error::custom(format!("unknown evaluation metric `{k}`"))),
                }
            } else {
                return Err(D::Error::custom(format!("unknown evaluation metric `{k}`")));
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON a run wrote before the report was typed reads back, and writes again, the same.
    #[test]
    fn flat_json_round_trips() {
        let text = r#"{"val_loss/chat":2.5,"val_loss/text":1.5,"val_loss":2.0,"ppl/wiki":12.5,"arc_easy/acc":0.5,"arc_easy/acc_stderr":0.1,"arc_easy/acc_norm":0.625,"arc_easy/acc_norm_stderr":0.125,"arc_easy/n":8,"lambada/acc":0.25,"lambada/acc_stderr":0.2,"lambada/perplexity":30.0,"lambada/n":4}"#;
        let r: Report = serde_json::from_str(text).unwrap();
        assert_eq!(r.val_loss, Some(2.0));
        assert_eq!(r.metric("ppl/wiki"), Some(12.5));
        assert_eq!(r.tasks["arc_easy"].acc_norm, Some(0.625));
        assert_eq!(r.tasks["lambada"].n, 4);
        let again: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(text).unwrap());
        assert_eq!(serde_json::from_str::<Report>("null").unwrap(), Report::default());
        let diverged: Report = serde_json::from_str(r#"{"val_loss": null}"#).unwrap();
        assert!(diverged.val_loss.unwrap().is_nan());
        assert_eq!(serde_json::to_string(&diverged).unwrap(), r#"{"val_loss":null}"#);
        assert!(serde_json::from_str::<Report>(r#"{"valloss": 1.0}"#).unwrap_err().to_string().contains("valloss"));
    }
}
