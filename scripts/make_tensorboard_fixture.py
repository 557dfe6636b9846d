#!/usr/bin/env python3
"""An event file written by TensorBoard's own protobuf messages and TFRecord writer, for the
Rust test `event_files_match_tensorboards_writer` (crates/qat-train/tests/tensorboard.rs): qat
writes the same events with the same wall times and must produce the same bytes.

    /work/venv/bin/pip install tensorboard
    python3 scripts/make_tensorboard_fixture.py
"""
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

out = Path(__file__).resolve().parent.parent / "crates/qat-train/tests/fixtures/tensorboard_events.bin"
events = [
    event_pb2.Event(wall_time=1000.5, step=0, file_version="brain.Event:2"),
    event_pb2.Event(wall_time=1001.25, step=0, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag="train/loss", simple_value=3.25), summary_pb2.Summary.Value(tag="eval/val_loss", simple_value=2.5)])),
    event_pb2.Event(wall_time=1002.0, step=3, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)),
    event_pb2.Event(wall_time=1003.0, step=4, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="train/lr", simple_value=1e-4)])),
]
with open(out, "wb") as f:
    w = RecordWriter(f)
    for e in events:
        w.write(e.SerializeToString())
print(f"wrote {out} ({out.stat().st_size} bytes)")
