"""mmkeras: multimodal classification with TensorFlow and Keras.

The public API is listed in `__all__`. Names are imported on first use, so
`import mmkeras` (and `mmkeras --help`) answer at once without importing
TensorFlow.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes
from mmkeras._version import __version__  # noqa: F401 - `mmkeras.__version__`

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "load_spec": "mmkeras.spec",
    "DatasetSpec": "mmkeras.spec",
    "FeatureSpec": "mmkeras.spec",
    "LabelSpec": "mmkeras.spec",
    "SplitSpec": "mmkeras.spec",
    "FUSIONS": "mmkeras.fusion",
    "BRANCHES": "mmkeras.branches",
    "build_text_branch": "mmkeras.branches",
    "build_image_branch": "mmkeras.branches",
    "build_audio_branch": "mmkeras.branches",
    "build_classifier": "mmkeras.models.classifier",
    "prepare": "mmkeras.datasets",
    "make_dataset": "mmkeras.data.pipeline",
    "read_split": "mmkeras.data.pipeline",
    "text_corpus": "mmkeras.data.pipeline",
    "carve_validation": "mmkeras.data.validation",
    "with_validation_split": "mmkeras.data.validation",
    "ValidationSplit": "mmkeras.data.validation",
    "write_tfrecords": "mmkeras.data.tfrecords",
    "scan_split": "mmkeras.data.scan",
    "ScanReport": "mmkeras.data.scan",
    "BadInputError": "mmkeras.data.scan",
    "train": "mmkeras.training.loop",
    "TrainResult": "mmkeras.training.loop",
    "evaluate": "mmkeras.evaluation.report",
    "predict": "mmkeras.models.predict",
    "calibrate": "mmkeras.models.calibration",
    "explain": "mmkeras.models.explain",
    "export_for_serving": "mmkeras.export.saved_model",
    "check_export": "mmkeras.export.check",
    "HubEncoder": "mmkeras.branches.hub",
    "KerasHubEncoder": "mmkeras.branches.kerashub",
    "fine_tune": "mmkeras.training.fine_tune",
    "load_run": "mmkeras.runs.load",
    "save_run": "mmkeras.training.save_run",
    "load_classifier": "mmkeras.models.saving",
    "build_dual_encoder": "mmkeras.alignment.dual_encoder",
    "DualEncoder": "mmkeras.alignment.dual_encoder",
    "ContrastiveLoss": "mmkeras.alignment.contrastive",
    "TripletLoss": "mmkeras.alignment.triplet",
    "retrieve": "mmkeras.alignment.retrieval",
    "evaluate_retrieval": "mmkeras.alignment.retrieval",
    "zero_shot_classify": "mmkeras.alignment.zero_shot",
    "exemplar_prototypes": "mmkeras.alignment.zero_shot",
    "calibrate_zero_shot": "mmkeras.alignment.zero_shot",
    "hub_occurrence": "mmkeras.alignment.hubness",
    "class_embeddings": "mmkeras.alignment.zero_shot",
    "build_zero_shot_classifier": "mmkeras.alignment.zero_shot_classifier",
    "export_tower": "mmkeras.alignment.export",
    "tune": "mmkeras.tuning.search",
    "TuneResult": "mmkeras.tuning.search",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
