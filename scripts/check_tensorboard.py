#!/usr/bin/env python3
"""Read an ft TensorBoard log dir with TensorBoard's own reader and print every scalar.

Checks that ft's hand-written event files (src/train/tensorboard.rs) are what TensorBoard
expects. Needs `pip install tensorboard`.

    python3 scripts/check_tensorboard.py runs/smollm2-support/tb

A sample file without a training run:

    FT_TB_OUT=/tmp/tb cargo test --release --lib tensorboard -- --ignored
    python3 scripts/check_tensorboard.py /tmp/tb

Exits 1 when the dir holds no scalars.
"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    if not tags:
        print(f"{sys.argv[1]}: no scalars found", file=sys.stderr)
        return 1
    for tag in sorted(tags):
        events = acc.Scalars(tag)
        values = ", ".join(f"{e.step}:{e.value:.6g}" for e in events)
        print(f"{tag} ({len(events)} points): {values}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
