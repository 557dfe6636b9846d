//! The `qat` binary with config and sweep files named without a directory.

use qat_train::sweep::SweepConfig;

/// Config and sweep files named without a directory (`qat train run.toml` in its own folder):
/// their relative paths resolve against the current directory.
#[test]
fn bare_file_names_resolve_against_the_current_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = SweepConfig::load(&qat_testing::sweep_file(tmp.path(), "bare", "")).unwrap();
    let qat = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qat")).current_dir(tmp.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = qat(&["sweep", "bare.toml", "--dry-run"]);
    assert_eq!(listed.lines().count(), sweep.points().len(), "{listed}");
    qat(&["train", "base.toml", "--quiet", "--set", "train.max_steps=1", "--set", "output.dir=\"bare-run\""]);
    assert!(tmp.path().join("bare-run/summary.json").exists());
}
