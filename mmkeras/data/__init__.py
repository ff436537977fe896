"""Input pipelines: decoders, manifests, tf.data pipelines, TFRecord shards, the bad-input scan.

Modules: `decoders` (raw values -> tensors; shared with the serving export),
`manifest` (CSV/JSONL tables), `scan` (bad-input policy), `pipeline`
(`read_split`, `make_dataset`, `DecodeAhead`, `text_corpus`), `tfrecords`
(`write_tfrecords`) and `validation` (`carve_validation`,
`with_validation_split`: a validation split held out of the train split). Names are imported on first use.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "decode_text": "mmkeras.data.decoders",
    "decode_image": "mmkeras.data.decoders",
    "decode_audio": "mmkeras.data.decoders",
    "decode_feature": "mmkeras.data.decoders",
    "decode_batch": "mmkeras.data.decoders",
    "make_example_decoder": "mmkeras.data.decoders",
    "read_manifest": "mmkeras.data.manifest",
    "read_split": "mmkeras.data.pipeline",
    "make_dataset": "mmkeras.data.pipeline",
    "DecodeAhead": "mmkeras.data.pipeline",
    "text_corpus": "mmkeras.data.pipeline",
    "carve_validation": "mmkeras.data.validation",
    "with_validation_split": "mmkeras.data.validation",
    "ValidationSplit": "mmkeras.data.validation",
    "write_tfrecords": "mmkeras.data.tfrecords",
    "scan_split": "mmkeras.data.scan",
    "ScanReport": "mmkeras.data.scan",
    "BadExample": "mmkeras.data.scan",
    "BadInputError": "mmkeras.data.scan",
}

# The same names as `_EXPORTS`, sorted.
__all__ = [
    "BadExample",
    "BadInputError",
    "DecodeAhead",
    "ScanReport",
    "ValidationSplit",
    "decode_audio",
    "decode_batch",
    "decode_feature",
    "decode_image",
    "decode_text",
    "make_dataset",
    "carve_validation",
    "make_example_decoder",
    "read_manifest",
    "read_split",
    "scan_split",
    "text_corpus",
    "with_validation_split",
    "write_tfrecords",
]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
