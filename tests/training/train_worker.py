"""A training process for the subprocess tests: multi-worker, logical CPUs, kill and resume.

Run as `python tests/training/train_worker.py OUTPUT_DIR [options]`; prints one
line `RESULT {json}` at the end. Things that must happen before TensorFlow
starts (logical CPU devices, TF_CONFIG) happen here, in a fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Tiny branches: these tests check distribution and fault tolerance, not accuracy.
SMALL_MODEL = {
    "units": 8,
    "embed_dim": 8,
    "branch_options": {
        "text": {"lstm_units": 4, "token_dim": 4, "bidirectional": False},
        "image": {"stages": [4], "convs_per_stage": 1, "augment": False},
        "audio": {"encoder": "conv1d", "conv_stages": [4]},
    },
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--logical-cpus", type=int, default=0)
    parser.add_argument("--kill-at", default="", help="EPOCH:BATCH (0-based) to SIGKILL this process at")
    parser.add_argument("--kill-marker", default="", help="kill only if this file does not exist yet")
    parser.add_argument("--backup-every-steps", type=int, default=None)
    parser.add_argument("--weights-out", default="")
    parser.add_argument("--scale-learning-rate", action="store_true", help="scale the learning rate with replicas")
    parser.add_argument("--no-validation", action="store_true", help="train on a spec without its validation split")
    args = parser.parse_args(argv)

    import tensorflow as tf

    if args.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)

    import keras
    import numpy as np

    from mmkeras.spec import load_spec
    from mmkeras.training.loop import train

    class KillAt(keras.callbacks.Callback):
        """SIGKILL the process at a given batch: no cleanup, like a lost machine."""

        def __init__(self, epoch: int, batch: int, marker: str):
            super().__init__()
            self.epoch, self.batch, self.marker, self.current = epoch, batch, marker, -1

        def on_epoch_begin(self, epoch, logs=None):
            self.current = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.current, batch) == (self.epoch, self.batch):
                open(self.marker, "w").close()
                print("KILLING", self.current, batch, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    callbacks = []
    if args.kill_at and not os.path.exists(args.kill_marker):
        epoch, batch = (int(part) for part in args.kill_at.split(":"))
        callbacks.append(KillAt(epoch, batch, args.kill_marker))
    spec = load_spec("tiny")
    if args.no_validation:  # and no carved one either (validation_fraction=0 below)
        spec = spec.replace(splits={name: split for name, split in spec.splits.items() if name != "validation"})
    result = train(
        spec, epochs=args.epochs, batch_size=args.batch_size, output_dir=args.output_dir, strategy=args.strategy,
        seed=0, verbose=2, early_stopping_patience=None, backup_every_steps=args.backup_every_steps,
        learning_rate=1e-3, scale_learning_rate_with_replicas=args.scale_learning_rate,
        callbacks=callbacks, validation_fraction=0.0 if args.no_validation else 0.1, **SMALL_MODEL,
    )
    if args.weights_out:
        np.savez(args.weights_out, *result.model.get_weights())
    record = {"initial_epoch": result.initial_epoch, "epochs": result.history["epoch"], **result.runtime}
    print("RESULT " + json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
