"""Alignment losses under a 2-replica MirroredStrategy, for tests/alignment/test_distributed_alignment.py.

Run as `python tests/alignment/replica_worker.py`; prints one line `RESULT {json}`.
The two logical CPU devices must be configured before TensorFlow initialises
its devices, hence a fresh process. For each loss it computes, on the same
global batch: the single-replica loss and its gradient with respect to the
embeddings; and, under the strategy, each replica's loss on its half of the
batch (summed across replicas, as Keras' gradient all-reduce does) and its
gradient with respect to its own half. Finally a tiny dual encoder is
evaluated and fitted through Keras under the strategy.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GLOBAL_BATCH = 8
DIM = 6


def main() -> int:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np

    from mmkeras.alignment.contrastive import ContrastiveLoss
    from mmkeras.alignment.triplet import TripletLoss

    rng = np.random.default_rng(0)
    a = rng.normal(size=(GLOBAL_BATCH, DIM)).astype("float32")
    b = (a + 0.8 * rng.normal(size=(GLOBAL_BATCH, DIM))).astype("float32")
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    labels = np.array([0, 1, 0, 2, 1, 1, 2, 0], "int32")
    valid = np.array([True, True, False, True, True, True, True, False])
    log_temperature = np.float32(np.log(0.3))

    cases = {
        "contrastive_pairs": (ContrastiveLoss(temperature=0.2), False),
        "contrastive_labels_learned_temperature": (ContrastiveLoss(positives="labels"), True),
        "triplet_pairs": (TripletLoss(margin=0.5), False),
        "triplet_labels": (TripletLoss(margin=0.5, positives="labels"), True),
        # The control: without the gather each replica only sees its own negatives.
        "contrastive_without_gather": (ContrastiveLoss(temperature=0.2, gather_across_replicas=False), False),
    }

    def call(loss, with_extras, a_part, b_part, labels_part, valid_part):
        y_pred = tf.stack([a_part, b_part], axis=1)
        if with_extras:
            y_pred = {"embeddings": y_pred, "log_temperature": tf.constant(log_temperature), "valid": valid_part}
        y_true = labels_part if getattr(loss, "positives", "pairs") == "labels" else None
        return loss(y_true, y_pred)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    half = GLOBAL_BATCH // 2
    result = {"num_replicas": int(strategy.num_replicas_in_sync), "cases": {}}
    for case, (loss, with_extras) in cases.items():
        a_all, b_all = tf.constant(a), tf.constant(b)
        with tf.GradientTape() as tape:
            tape.watch([a_all, b_all])
            single = call(loss, with_extras, a_all, b_all, tf.constant(labels), tf.constant(valid))
        single_gradients = [g.numpy() for g in tape.gradient(single, [a_all, b_all])]

        def split(array):
            return strategy.experimental_distribute_values_from_function(
                lambda context, array=array: tf.constant(array[context.replica_id_in_sync_group * half:][:half])
            )

        @tf.function
        def replica_step(a_part, b_part, labels_part, valid_part, loss=loss, with_extras=with_extras):
            with tf.GradientTape() as tape:
                tape.watch([a_part, b_part])
                value = call(loss, with_extras, a_part, b_part, labels_part, valid_part)
            return value, tape.gradient(value, [a_part, b_part])

        values, gradients = strategy.run(replica_step, args=(split(a), split(b), split(labels), split(valid)))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)
        distributed_gradients = [
            np.concatenate([t.numpy() for t in strategy.experimental_local_results(g)]) for g in gradients
        ]
        result["cases"][case] = {
            "single": float(single),
            "distributed": float(total),
            "per_replica": [float(v) for v in strategy.experimental_local_results(values)],
            "gradient_difference": float(
                max(np.abs(s - d).max() for s, d in zip(single_gradients, distributed_gradients))
            ),
            "gradient_scale": float(max(np.abs(s).max() for s in single_gradients)),
        }
    result["keras"] = keras_integration(strategy)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def keras_integration(strategy) -> dict:
    """A tiny image <-> audio encoder under the strategy: `evaluate` matches one device, and `fit` runs.

    `evaluate` runs the loss inside Keras' replica step, so its candidates are
    gathered there; in inference mode batch normalisation uses its moving
    statistics, so both runs compute the same embeddings and must report the
    same loss.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    import mmkeras
    from mmkeras.alignment.dual_encoder import build_dual_encoder

    spec = mmkeras.load_spec("tiny")
    options = {
        "embed_dim": 8, "branch_dim": 8, "dropout_rate": 0.0,
        "branch_options": {"image": {"stages": [4], "convs_per_stage": 1, "augment": False},
                           "audio": {"encoder": "conv1d", "conv_stages": [4]}},
    }
    keras.utils.set_random_seed(0)
    with strategy.scope():
        encoder = build_dual_encoder(spec, ("image", "audio"), **options)
        encoder.compile(keras.optimizers.SGD(0.1))
    single = build_dual_encoder(spec, ("image", "audio"), **options)
    single.set_weights(encoder.get_weights())
    single.compile(keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    batch = {
        "picture": rng.integers(0, 255, (GLOBAL_BATCH, 16, 16, 3)).astype("uint8"),
        "sound": rng.uniform(-1, 1, (GLOBAL_BATCH, 2000)).astype("float32"),
        "sound_present": np.array([True] * (GLOBAL_BATCH - 1) + [False]),
    }
    dataset = tf.data.Dataset.from_tensor_slices((batch, np.zeros(GLOBAL_BATCH, "int32"))).batch(GLOBAL_BATCH)
    return {
        "evaluate_distributed": float(encoder.evaluate(dataset, verbose=0)),
        "evaluate_single": float(single.evaluate(dataset, verbose=0)),
        "fit_loss": float(encoder.fit(dataset, epochs=1, verbose=0).history["loss"][0]),
    }


if __name__ == "__main__":
    sys.exit(main())
