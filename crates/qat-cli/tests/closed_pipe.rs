//! `qat … | head`: when the reader closes the pipe, qat ends by `SIGPIPE` like other Unix
//! tools, not with a panic ("failed printing to stdout: Broken pipe").

use qat_testing as common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

#[test]
fn closed_stdout_ends_quietly() {
    let model = common::stories_model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_qat"))
        .args(["bench", model.to_str().unwrap(), "--mode", "forward", "--seq-len", "16", "--iters", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before qat prints its result.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "status {:?}: {stderr}", out.status);
}
