"""make_dataset / read_split / text_corpus on the generated `tiny` dataset."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.data import decoders
from mmkeras.data.manifest import read_manifest
from mmkeras.data.pipeline import DecodeAhead, make_dataset, read_split, text_corpus


def stages(dataset) -> list[str]:
    """The class names of a dataset's chain, last stage first."""
    names = []
    while dataset is not None:
        names.append(type(dataset).__name__)
        dataset = getattr(dataset, "_input_dataset", None)
    return names


def captions(dataset) -> list[bytes]:
    return [c for features, _ in dataset for c in features["caption"].numpy().tolist()]


def test_shapes_dtypes_and_keys_on_tiny(tiny_spec):
    dataset, report = make_dataset(tiny_spec, "validation", batch_size=4, return_report=True)
    features_spec, label_spec = dataset.element_spec
    assert set(features_spec) == {"caption", "picture", "sound", "caption_present", "picture_present", "sound_present"}
    assert features_spec["picture"] == tf.TensorSpec([None, 16, 16, 3], tf.uint8)
    assert features_spec["sound"] == tf.TensorSpec([None, 2000], tf.float32)
    assert features_spec["caption"] == tf.TensorSpec([None], tf.string)
    assert features_spec["sound_present"] == tf.TensorSpec([None], tf.bool)
    assert label_spec == tf.TensorSpec([None], tf.int32)
    batches = list(dataset)
    assert [int(labels.shape[0]) for _, labels in batches] == [4, 4, 4, 3]  # no drop when not training
    labels = np.concatenate([labels.numpy() for _, labels in batches])
    rows = read_manifest(tiny_spec, "validation").rows
    assert labels.tolist() == [row.label for row in rows]  # deterministic: the manifest's order
    presence = np.concatenate([features["sound_present"].numpy() for features, _ in batches])
    assert presence.tolist() == [row.present("sound") for row in rows] and not presence.all()
    silent = np.concatenate([features["sound"].numpy() for features, _ in batches])[~presence]
    assert not silent.any()
    assert (report.total, report.kept, report.skipped) == (15, 15, {})


def test_order_is_deterministic_when_asked(tiny_spec):
    first = captions(make_dataset(tiny_spec, "train", batch_size=8, training=True, seed=3, deterministic=True))
    second = captions(make_dataset(tiny_spec, "train", batch_size=8, training=True, seed=3, deterministic=True))
    assert first == second


@pytest.mark.parametrize("cache", [True, False])
def test_training_shuffles_each_epoch_and_drops_the_remainder(tiny_spec, cache):
    dataset = make_dataset(tiny_spec, "train", batch_size=7, training=True, seed=1, cache=cache)
    in_order = captions(make_dataset(tiny_spec, "train", batch_size=60))
    epoch_one, epoch_two = captions(dataset), captions(dataset)
    assert len(epoch_one) == len(epoch_two) == 56  # 8 full batches of 7 out of 60
    assert epoch_one != in_order[:56] and epoch_one != epoch_two
    assert set(epoch_one) <= set(in_order)


def test_cache_follows_the_budget_or_the_argument(tiny_spec):
    assert "CacheDataset" in stages(make_dataset(tiny_spec, "test"))  # 24 small examples fit
    assert "CacheDataset" not in stages(make_dataset(tiny_spec, "test", cache_budget_bytes=1000))
    assert "CacheDataset" not in stages(make_dataset(tiny_spec, "test", cache=False))
    assert "CacheDataset" in stages(make_dataset(tiny_spec, "test", cache=True, cache_budget_bytes=0))


def test_decode_ahead_fills_the_cache_without_changing_the_batches(tiny_spec):
    options = {"batch_size": 7, "training": True, "seed": 1, "deterministic": True}
    dataset, decoding = make_dataset(tiny_spec, "train", decode_ahead=True, **options)
    decoding.wait()
    assert decoding.done()
    # The same shuffled epochs as without it: the background pass reads the cache's stage, not the shuffle.
    plain = make_dataset(tiny_spec, "train", **options)
    assert captions(dataset) == captions(plain) and captions(dataset) == captions(plain)
    _, report, decoding = make_dataset(tiny_spec, "test", decode_ahead=True, return_report=True)
    assert report.kept == 24 and decoding is not None
    decoding.wait()
    # Nothing to fill when the split is not cached.
    assert make_dataset(tiny_spec, "test", cache=False, decode_ahead=True)[1] is None


def test_a_later_iterator_reads_the_cache_the_background_pass_filled():
    decoded = []

    def decode(value):
        return tf.py_function(lambda v: decoded.append(int(v)) or v, [value], tf.int64)

    cached = tf.data.Dataset.range(40).map(decode).cache()
    DecodeAhead(cached, "numbers").wait()
    assert sorted(decoded) == list(range(40))
    epoch = [int(v) for batch in cached.shuffle(40, seed=0).batch(8).prefetch(2) for v in batch]
    assert sorted(epoch) == list(range(40)) and len(decoded) == 40  # read from the cache, not decoded again


def test_decode_ahead_hands_its_error_to_wait():
    failing = tf.data.Dataset.from_tensor_slices(["1", "one"]).map(tf.strings.to_number)
    decoding = DecodeAhead(failing.cache(), "bad/split")
    with pytest.raises(tf.errors.InvalidArgumentError, match="one"):
        decoding.wait()


def test_manifest_splits_shard_by_data_across_workers(tiny_spec):
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    dataset = make_dataset(tiny_spec, "test", batch_size=1, cache=False)
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
    everything = captions(dataset)
    shards = [captions(_AutoShardDataset(make_dataset(tiny_spec, "test", batch_size=1), 2, i)) for i in range(2)]
    assert shards == [everything[0::2], everything[1::2]]


def test_training_shards_of_two_workers_split_every_epoch_between_them(tiny_spec):
    """What multi-worker training relies on: with a shared seed and kept order, each worker's
    own copy of the shuffled pipeline shards into disjoint halves that cover the split."""
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    def worker(index):
        dataset = make_dataset(tiny_spec, "train", batch_size=1, training=True, seed=0, deterministic=True,
                               drop_remainder=False)
        return _AutoShardDataset(dataset, 2, index)

    workers = [worker(0), worker(1)]
    for _ in range(2):  # reshuffled each epoch, alike on both workers
        halves = [captions(dataset) for dataset in workers]
        assert sorted(halves[0] + halves[1]) == sorted(captions(make_dataset(tiny_spec, "train", batch_size=1)))
        assert abs(len(halves[0]) - len(halves[1])) <= 1


def test_read_split_yields_raw_bytes_and_presence(tiny_spec):
    raw, label = next(iter(read_split(tiny_spec, "train")))
    assert raw["picture"].numpy().startswith(b"\x89PNG")
    assert raw["sound"].numpy().startswith(b"RIFF")
    assert label.dtype == tf.int32
    rows = read_manifest(tiny_spec, "train").rows
    absent = next(i for i, row in enumerate(rows) if not row.present("sound"))
    raw, _ = next(iter(read_split(tiny_spec, "train").skip(absent)))
    assert raw["sound"].numpy() == b"" and not raw["sound_present"].numpy()


def test_text_corpus_reads_only_texts(tiny_spec, monkeypatch):
    monkeypatch.setattr(decoders, "DECODERS", {})  # any decoding would fail
    corpus = text_corpus(tiny_spec, "caption")
    rows = read_manifest(tiny_spec, "train").rows
    assert corpus == [row.values["caption"] for row in rows if row.present("caption")]
    assert 0 < len(corpus) < len(rows) and all(corpus)
    with pytest.raises(ValueError, match="text feature"):
        text_corpus(tiny_spec, "picture")


def test_bad_batch_size_is_refused(tiny_spec):
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(tiny_spec, "test", batch_size=0)
