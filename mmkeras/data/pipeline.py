"""tf.data pipelines from specs: read raw records, decode, batch, prefetch.

`make_dataset` is one linear chain (see ARCHITECTURE.md): read the split's raw
records (manifest rows with their files read in parallel, or TFRecord shards
read with a parallel interleave), decode them with the decoders the serving
export also uses, cache them when they fit in memory, shuffle, batch and
prefetch. Bad examples are handled before any of that by the scan (see
`mmkeras.data.scan`): the spec's `on_error` decides whether they stop the
run or are skipped and counted. `DecodeAhead` fills a cached split's cache
in the background, so that `train` builds and traces the model meanwhile.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future

import tensorflow as tf

from mmkeras.checks import check_positive_int
from mmkeras.data import decoders
from mmkeras.data.common import LOGGER, read_manifest_rows, read_tfrecord_files, tfrecord_files
from mmkeras.data.manifest import read_manifest
from mmkeras.data.scan import CheckedSplit, ScanReport, check_split
from mmkeras.datasets import prepare
from mmkeras.spec import DatasetSpec

# The in-memory cache is used only below this many bytes (and a quarter of RAM).
DEFAULT_CACHE_BUDGET_BYTES = 2 << 30
# Memory the shuffle buffer of decoded examples may take when not caching.
SHUFFLE_BUFFER_BYTES = 256 << 20
MAX_SHUFFLE_BUFFER = 10_000
# Estimated in-memory size of one decoded text (string tensors carry overhead).
TEXT_BYTES_ESTIMATE = 128


def read_split(
    spec: DatasetSpec,
    split: str,
    *,
    shuffle_files: bool = False,
    seed: int | None = None,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """A dataset of a split's raw records, with the spec's bad-input policy applied.

    Nothing is decoded here: records hold the inline text, the files' encoded
    bytes, presence flags and the class id, so this is also what the TFRecord
    writer and the serving export see.

    Args:
      spec: the dataset spec (generated datasets are built on first use).
      split: the split's name.
      shuffle_files: shuffle the manifest's rows, or the TFRecord shards, each
        epoch (cheap: paths and file names, not data).
      seed: the shuffle seed.
      deterministic: keep a fixed order through the parallel reads.

    Returns:
      A dataset of `(raw, label)`: `raw` maps each feature name to a scalar
      string and `"<name>_present"` to a scalar bool; `label` is int32.

    Raises:
      BadInputError: if the split has bad examples and `on_error` is "raise".
      FileNotFoundError, ValueError: if the manifest or shards cannot be read.

    Example:
      >>> raw, label = next(iter(read_split(load_spec("tiny"), "train")))
      >>> raw["picture"].numpy()[:4]
      b'\\x89PNG'
    """
    prepare(spec)
    return _raw_records(spec, check_split(spec, split), shuffle_files, seed, deterministic)


def _raw_records(spec, checked: CheckedSplit, shuffle_files, seed, deterministic) -> tf.data.Dataset:
    options = {"shuffle": shuffle_files, "seed": seed, "deterministic": deterministic}
    if checked.rows is not None:
        return read_manifest_rows(spec, checked.rows, **options)
    return read_tfrecord_files(spec, checked.files, skip_keys=checked.skip_keys, **options)


def make_dataset(
    spec: DatasetSpec,
    split: str,
    *,
    batch_size: int = 32,
    training: bool = False,
    seed: int | None = None,
    deterministic: bool | None = None,
    cache: bool | None = None,
    drop_remainder: bool | None = None,
    return_report: bool = False,
    cache_budget_bytes: int | None = None,
    decode_ahead: bool = False,
) -> tf.data.Dataset | tuple[tf.data.Dataset | ScanReport | DecodeAhead | None, ...]:
    """The input pipeline of a split: batches of decoded features and labels.

    One linear chain: raw records -> decode (in parallel) -> cache (when the
    decoded split fits the memory budget) -> shuffle (training only) -> batch
    -> prefetch. There is no `repeat`: Keras `fit` runs the epochs, and each
    epoch sees every example once, in a new order. Under a multi-worker
    strategy the dataset shards itself: by file for TFRecord splits, by
    element for manifest splits (give every worker the same `seed` then, so
    they shuffle alike and split the examples between them).

    Args:
      spec: the dataset spec (generated datasets are built on first use).
      split: the split's name.
      batch_size: examples per batch (the global batch under a strategy).
      training: shuffle each epoch, and by default drop the last partial batch
        and allow a non-deterministic order for speed.
      seed: seed for the shuffles, for a reproducible order.
      deterministic: keep a fixed element order through the parallel stages;
        defaults to `not training`.
      cache: keep the decoded examples in memory after the first epoch; None
        decides by the estimated decoded size against the budget.
      drop_remainder: drop the last partial batch; defaults to `training`.
      return_report: also return the bad-input `ScanReport`.
      cache_budget_bytes: the budget for `cache=None`; defaults to the
        smaller of 2 GiB and a quarter of the machine's memory.
      decode_ahead: when the split is cached, start decoding it into the
        cache now, in a background thread (see `DecodeAhead`), so that the
        first epoch does not wait for it: `train` builds and traces the model
        meanwhile. The shuffle and every later stage are untouched.

    Returns:
      A dataset of `(features, label)`: `features` maps each feature name to a
      (batch, *feature.shape) tensor of the feature's dtype (string text,
      uint8 images, float32 audio) and `"<name>_present"` to a (batch,) bool
      tensor; `label` is a (batch,) int32 class id. With `return_report`, a
      `(dataset, report)` pair. With `decode_ahead`, the `DecodeAhead` (or
      None when the split is not cached) comes last: `(dataset, decoding)` or
      `(dataset, report, decoding)`.

    Raises:
      ValueError: if `batch_size` is not a positive integer.
      BadInputError: if the split has bad examples and `on_error` is "raise".

    Example:
      >>> dataset = make_dataset(load_spec("tiny"), "train", batch_size=2, training=True, seed=0)
      >>> features, label = next(iter(dataset))
      >>> features["picture"].shape, label.dtype
      (TensorShape([2, 16, 16, 3]), tf.int32)
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    deterministic = not training if deterministic is None else deterministic
    drop_remainder = training if drop_remainder is None else drop_remainder
    prepare(spec)
    checked = check_split(spec, split)
    count = checked.report.kept
    example_bytes = decoded_bytes_per_example(spec)
    if cache is None:
        budget = default_cache_budget() if cache_budget_bytes is None else cache_budget_bytes
        cache = count * example_bytes <= budget
        LOGGER.debug("Split %r: %d examples, about %d bytes decoded; cache=%s.", split, count, count * example_bytes, cache)

    # A cached split is shuffled after the cache (so each epoch reshuffles it); an
    # uncached one also shuffles its rows or shards, which costs no memory.
    dataset = _raw_records(spec, checked, training and not cache, seed, deterministic)
    # The serving signature decodes with the same functions. The scan has checked every kept example's size
    # against its feature's limit with them, so the pipeline skips those header reads.
    decode = decoders.make_example_decoder(spec, check_limits=not checked.decoding_checked)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    decoding = None
    if cache:
        dataset = dataset.cache()
        if decode_ahead:
            decoding = DecodeAhead(dataset, f"{spec.name}/{split}")
    if training:  # before batching, and with no repeat: every example once per epoch
        buffer = count if cache else min(count, SHUFFLE_BUFFER_BYTES // example_bytes, MAX_SHUFFLE_BUFFER)
        dataset = dataset.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)

    options = tf.data.Options()
    options.deterministic = deterministic
    # Shard whole files across workers when there are files to shard; a manifest's
    # rows are one in-memory table, so its elements are sharded instead.
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.DATA if checked.rows is not None else policy.FILE
    dataset = dataset.with_options(options)
    returned = (dataset, *([checked.report] if return_report else []), *([decoding] if decode_ahead else []))
    return returned if len(returned) > 1 else dataset


class DecodeAhead:
    """One pass over a cached stage of a pipeline in a background thread, which fills its in-memory cache.

    The first epoch over a cached split otherwise decodes every example before
    its first batch (the shuffle buffer holds the whole split), while the
    model's first step waits. Here the pass is one op running in tf.data's
    own threads (every core but one) without the GIL, so it overlaps with
    building and tracing the model, which are Python. A later iterator over any dataset built on the same
    cached stage reads the finished cache. Call `wait` before the first
    epoch starts reading: an iterator made earlier would decode the split a
    second time (the same examples, so only time is lost).

    Args:
      cached: the pipeline's stage that ends with `cache()`.
      name: what is decoded ("<spec>/<split>"), in the thread's name.

    Example:
      >>> dataset, decoding = make_dataset(spec, "train", training=True, decode_ahead=True)
      >>> ...  # build and compile the model
      >>> if decoding is not None:
      ...     decoding.wait()
    """

    def __init__(self, cached: tf.data.Dataset, name: str):
        self.name = name
        self._done: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(cached,), name=f"decode {name}", daemon=True)
        self._thread.start()

    def _run(self, cached: tf.data.Dataset) -> None:
        # Every core but one decodes: that one stays with the Python thread that builds and traces the model
        # (with all of them, the model's set-up slowed down by about as much as the decoding saved).
        options = tf.data.Options()
        options.threading.private_threadpool_size = max(1, (os.cpu_count() or 2) - 1)
        options.threading.max_intra_op_parallelism = 1
        try:
            # One op for the whole pass, with no Python per example: the thread holds the GIL only to start it.
            cached.with_options(options).reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)
        except Exception as error:  # noqa: BLE001 - handed to `wait`, in the thread that needs the data
            self._done.set_exception(error)
        else:
            self._done.set_result(None)

    def done(self) -> bool:
        """Whether the pass has ended (the cache is full, or the pass failed)."""
        return self._done.done()

    def wait(self) -> None:
        """Block until the split is in the cache; raise the pass's error if it failed.

        Raises:
          Whatever decoding the split raised (the same error the first epoch would raise).
        """
        self._done.result()


def decoded_bytes_per_example(spec: DatasetSpec) -> int:
    """Estimate one decoded example's memory: its tensors, plus a guess for each text."""
    total = 8  # label and presence flags
    for feature in spec.features:
        if feature.modality == "text":
            total += TEXT_BYTES_ESTIMATE
        else:
            size = tf.as_dtype(feature.dtype).size
            for dim in feature.shape:
                size *= dim
            total += size
    return total


def default_cache_budget() -> int:
    """The memory `make_dataset` may cache into: `DEFAULT_CACHE_BUDGET_BYTES` or a quarter of RAM, if less."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_CACHE_BUDGET_BYTES
    return min(DEFAULT_CACHE_BUDGET_BYTES, memory // 4)


def text_corpus(spec: DatasetSpec, feature_name: str, split: str = "train") -> list[str]:
    """The raw texts of a text feature in a split, for adapting a `TextVectorization` vocabulary.

    Reads only the text (the manifest column, or the TFRecords' text field):
    no image or audio is read or decoded, and no bad-input scan runs. Missing
    texts are left out; rows that the scan would skip for another reason are
    kept, which moves a vocabulary by at most a handful of words.

    Args:
      spec: the dataset spec (generated datasets are built on first use).
      feature_name: the text feature's name.
      split: the split to read (the training split, so that validation words
        stay out of the vocabulary).

    Returns:
      The texts, in the split's order.

    Raises:
      ValueError: if the feature is not a text feature.

    Example:
      >>> text_corpus(load_spec("tiny"), "caption")[:2]
      ['ball red a toy', 'the shiny green thing']
    """
    feature = spec.feature(feature_name)
    if feature.modality != "text":
        raise ValueError(f"Feature {feature_name!r} is a {feature.modality} feature; text_corpus needs a text feature.")
    prepare(spec)
    if spec.split(split).manifest is not None:
        return [row.values[feature.name] for row in read_manifest(spec, split).rows if row.present(feature.name)]
    # A spec with only this feature parses only its field out of each record.
    records = read_tfrecord_files(spec.with_features([feature.name]), tfrecord_files(spec, split))
    return [
        raw[feature.name].decode("utf-8", errors="replace")
        for raw, _ in records.as_numpy_iterator()
        if raw[feature.presence_key]
    ]
