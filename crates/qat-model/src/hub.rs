//! Models named by Hugging Face Hub id (`org/name`, optionally `org/name@revision`), resolved to
//! a snapshot directory of the standard Hub cache, so every command that takes a checkpoint
//! directory also takes an id, and shares its downloads with transformers.
//!
//! The cache is `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; a model
//! lives in `models--org--name/` with `refs/<revision>` holding a commit hash and
//! `snapshots/<commit>/` the files. A revision that is a commit hash names its snapshot
//! directly. When the snapshot is not there, the files are downloaded (the repository's JSON,
//! safetensors, tokenizer and template files; not other weight formats), unless
//! `HF_HUB_OFFLINE=1`. A local directory always wins over an id of the same spelling.

use std::path::{Path, PathBuf};

use crate::ModelError;

/// `org/name` or `org/name@revision`: two non-empty segments of letters, digits, `-`, `_`, `.`
/// (not starting with `.`).
pub fn parse_id(s: &str) -> Option<(&str, &str)> {
    let (id, rev) = match s.split_once('@') {
        Some((id, rev)) if !rev.is_empty() => (id, rev),
        Some(_) => return None,
        None => (s, "main"),
    };
    let (org, name) = id.split_once('/')?;
    let segment = |p: &str| !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (segment(org) && segment(name)).then_some((id, rev))
}

/// The Hub cache directory of this environment.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return p.into();
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    hf_hub::Cache::default().path().clone()
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
}

/// The snapshot of `id` at `revision` in `cache`, if it is there.
pub fn cached_snapshot(cache: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let direct = repo.join("snapshots").join(revision);
    if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) && direct.is_dir() {
        return Some(direct);
    }
    let commit = std::fs::read_to_string(repo.join("refs").join(revision)).ok()?;
    let snapshot = repo.join("snapshots").join(commit.trim());
    snapshot.is_dir().then_some(snapshot)
}

/// A checkpoint directory for `spec`: the directory itself when it exists, else the Hub
/// snapshot of the id it spells (downloaded when missing and online).
pub fn resolve(spec: &Path) -> Result<PathBuf, ModelError> {
    if spec.is_dir() {
        return Ok(spec.to_path_buf());
    }
    resolve_id(&spec.to_string_lossy())
}

/// The Hub cache snapshot of the model id `spec` (`org/name[@revision]`), downloaded when it
/// is missing and `HF_HUB_OFFLINE` is not set.
pub fn resolve_id(spec: &str) -> Result<PathBuf, ModelError> {
    let Some((id, revision)) = parse_id(spec) else {
        let msg = "no such directory, and not a Hub model id (org/name[@revision])";
        return Err(ModelError::Io { path: spec.to_string(), source: std::io::Error::new(std::io::ErrorKind::NotFound, msg) });
    };
    let cache = cache_dir();
    if let Some(dir) = cached_snapshot(&cache, id, revision) {
        return Ok(dir);
    }
    let hub = |msg: String| ModelError::Hub { id: format!("{id}@{revision}"), msg };
    if offline() {
        return Err(hub(format!("not in the Hub cache {} and HF_HUB_OFFLINE is set", cache.display())));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.clone())).with_progress(true).build().map_err(|e| hub(e.to_string()))?;
    let repo = api.repo(hf_hub::Repo::with_revision(id.to_string(), hf_hub::RepoType::Model, revision.to_string()));
    let info = repo.info().map_err(|e| hub(e.to_string()))?;
    let wanted = |f: &str| {
        let name = f.rsplit('/').next().unwrap_or(f);
        f.ends_with(".json") || f.ends_with(".safetensors") || f.ends_with(".tiktoken") || f.ends_with(".jinja") || name == "tokenizer.model"
    };
    let mut config = None;
    for f in info.siblings.iter().map(|s| s.rfilename.as_str()).filter(|f| wanted(f)) {
        let path = repo.get(f).map_err(|e| hub(format!("{f}: {e}")))?;
        if f == "config.json" {
            config = Some(path);
        }
    }
    let config = config.ok_or_else(|| hub("the repository has no config.json".into()))?;
    Ok(config.parent().expect("a file in a snapshot").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_revisions_parse() {
        assert_eq!(parse_id("HuggingFaceTB/SmolLM2-135M-Instruct"), Some(("HuggingFaceTB/SmolLM2-135M-Instruct", "main")));
        assert_eq!(parse_id("org/m.v2@0123abc"), Some(("org/m.v2", "0123abc")));
        for bad in ["models/a/b", "./x", "../shared/models", "org/", "/abs", "org/name@", "a b/c"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    /// A snapshot found through `refs/<revision>`, or directly by commit hash.
    #[test]
    fn cached_snapshots_resolve_by_ref_and_by_commit() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo = cache.path().join("models--org--tiny");
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        let want = Some(repo.join("snapshots").join(commit));
        assert_eq!(cached_snapshot(cache.path(), "org/tiny", "main"), want);
        assert_eq!(cached_snapshot(cache.path(), "org/tiny", commit), want);
        assert_eq!(cached_snapshot(cache.path(), "org/tiny", "v2"), None);
        assert_eq!(cached_snapshot(cache.path(), "org/other", "main"), None);
    }
}
