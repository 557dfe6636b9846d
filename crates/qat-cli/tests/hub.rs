//! Models by Hub id, offline: a Hub-layout cache laid out here (stories260K under
//! `models--qat-test--stories260k/`, `refs/main` → a commit, `snapshots/<commit>/`) serves
//! `qat eval` and `qat train` exactly as the directory does. Downloading from the Hub is not
//! exercised (no Hub access on the test machines).

use qat_testing as common;

use std::path::{Path, PathBuf};
use std::process::Command;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A Hub cache holding stories260K as `qat-test/stories260k`.
fn hub_cache(root: &Path) -> PathBuf {
    let cache = root.join("hub");
    let repo = cache.join("models--qat-test--stories260k");
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for f in std::fs::read_dir(common::stories_model()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, snap.join(f.file_name().unwrap())).unwrap();
    }
    cache
}

fn qat(cache: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qat")).args(args).env("HF_HUB_CACHE", cache).env("HF_HUB_OFFLINE", "1").output().unwrap()
}

#[test]
fn hub_ids_resolve_from_the_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = hub_cache(tmp.path());
    let text = common::stories_text();
    let eval = |model: &str| {
        let out = qat(&cache, &["eval", model, "--text", text.to_str().unwrap(), "--max-tokens", "600", "--window", "256", "--stride", "128", "--json"]);
        assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["perplexity"].as_f64().unwrap()
    };
    let local = eval(common::stories_model().to_str().unwrap());
    assert_eq!(eval("qat-test/stories260k"), local);
    assert_eq!(eval(&format!("qat-test/stories260k@{COMMIT}")), local);
    for (missing, want) in [("qat-test/absent", "HF_HUB_OFFLINE"), ("qat-test/stories260k@v9", "HF_HUB_OFFLINE"), ("not/a/model", "not a Hub model id")] {
        let out = qat(&cache, &["eval", missing, "--text", text.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{missing}: {err}");
    }

    // A run config naming the model by id trains from the cached snapshot.
    let out_dir = tmp.path().join("run");
    let cfg = common::stories_config(&out_dir, "").replace(&format!("path = \"{}\"", common::stories_model().display()), "path = \"qat-test/stories260k\"");
    assert!(cfg.contains("qat-test/stories260k"));
    let cfg_path = tmp.path().join("run.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let out = qat(&cache, &["train", cfg_path.to_str().unwrap(), "--quiet", "--set", "train.max_steps=2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = std::fs::read_to_string(out_dir.join("config.toml")).unwrap();
    assert!(saved.contains(&format!("snapshots/{COMMIT}")), "the run records the snapshot it used:\n{saved}");
}
