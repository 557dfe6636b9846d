#!/usr/bin/env python3
"""Scalars of a run's TensorBoard event files (`[output] tensorboard = true` → RUN/tb), read by
TensorBoard's own EventAccumulator: one line per tag with its (step, value) pairs.

    python3 scripts/read_tensorboard.py RUN/tb
"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], purge_orphaned_data=True)
acc.Reload()
for tag in sorted(acc.Tags()["scalars"]):
    print(tag, [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)])
