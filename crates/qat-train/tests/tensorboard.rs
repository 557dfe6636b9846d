//! TensorBoard event files against TensorBoard's own writer: `scripts/make_tensorboard_fixture.py`
//! wrote four events (version, scalars, a restart, scalars) with TensorBoard's protobuf messages
//! and TFRecord writer; qat writes the same events at the same wall times and must produce the
//! same bytes.

use qat_train::tensorboard::EventWriter;

#[test]
fn event_files_match_tensorboards_writer() {
    let dir = tempfile::tempdir().unwrap();
    let times = std::cell::Cell::new(0usize);
    let clock = move || {
        let t = [1000.5, 1001.25, 1002.0, 1003.0][times.get()];
        times.set(times.get() + 1);
        t
    };
    let mut w = EventWriter::with_clock(dir.path(), Box::new(clock)).unwrap();
    w.scalars(0, &[("train/loss".into(), 3.25), ("eval/val_loss".into(), 2.5)]).unwrap();
    w.restart(3).unwrap();
    w.scalars(4, &[("train/lr".into(), 1e-4)]).unwrap();
    let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    assert!(file.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents.1000."));
    let ours = std::fs::read(&file).unwrap();
    let theirs = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tensorboard_events.bin")).unwrap();
    assert_eq!(ours, theirs);
}
