"""Cross-modal alignment: a shared embedding space, contrastive and triplet losses, retrieval, zero-shot.

Modules: `dual_encoder` (`build_dual_encoder`, `DualEncoder`), `temperature`
(`LearnableTemperature`, within bounds), `negative_queue` (`NegativeQueue`: a
memory queue of negatives for small batches), `contrastive` (`ContrastiveLoss`), `triplet`
(`TripletLoss`), `metrics` (Recall@K, mean and median rank), `retrieval`
(`retrieve`, `embed`, `evaluate_retrieval`, `class_space`), `hubness` (`hub_occurrence`,
CSLS and inverted-softmax `rescore`), `diversity` (maximal marginal relevance:
`diversified_order`), `zero_shot`, `zero_shot_classifier`
(`build_zero_shot_classifier`: raw images to probabilities from text prompts,
with `mmkeras.models.zero_shot_head`), `pretrain`
(pre-training, then a classifier started from the towers) and `export`
(each tower as its own SavedModel). Names are imported on first use.
"""
from __future__ import annotations

from mmkeras._lazy import lazy_attributes

# Public name -> module that defines it. Written out once; read-only.
_EXPORTS = {
    "build_dual_encoder": "mmkeras.alignment.dual_encoder",
    "DualEncoder": "mmkeras.alignment.dual_encoder",
    "tower": "mmkeras.alignment.dual_encoder",
    "LearnableTemperature": "mmkeras.alignment.temperature",
    "NegativeQueue": "mmkeras.alignment.negative_queue",
    "ContrastiveLoss": "mmkeras.alignment.contrastive",
    "TripletLoss": "mmkeras.alignment.triplet",
    "retrieval_ranks": "mmkeras.alignment.metrics",
    "retrieval_metrics": "mmkeras.alignment.metrics",
    "cross_modal_retrieval": "mmkeras.alignment.metrics",
    "chance_retrieval": "mmkeras.alignment.metrics",
    "embed": "mmkeras.alignment.retrieval",
    "retrieve": "mmkeras.alignment.retrieval",
    "retrieve_embeddings": "mmkeras.alignment.retrieval",
    "class_space": "mmkeras.alignment.retrieval",
    "evaluate_retrieval": "mmkeras.alignment.retrieval",
    "RetrievalResult": "mmkeras.alignment.retrieval",
    "class_embeddings": "mmkeras.alignment.zero_shot",
    "zero_shot_classify": "mmkeras.alignment.zero_shot",
    "ZeroShotResult": "mmkeras.alignment.zero_shot",
    "build_zero_shot_classifier": "mmkeras.alignment.zero_shot_classifier",
    "ZeroShotHead": "mmkeras.models.zero_shot_head",
    "exemplar_prototypes": "mmkeras.alignment.zero_shot",
    "calibrate_zero_shot": "mmkeras.alignment.zero_shot",
    "classify_scores": "mmkeras.alignment.zero_shot",
    "hub_occurrence": "mmkeras.alignment.hubness",
    "rescore": "mmkeras.alignment.hubness",
    "list_hub_occurrence": "mmkeras.alignment.hubness",
    "diversified_order": "mmkeras.alignment.diversity",
    "pretrain_encoder": "mmkeras.alignment.pretrain",
    "build_classifier_from_encoder": "mmkeras.alignment.pretrain",
    "transfer_tower_weights": "mmkeras.alignment.pretrain",
    "encoder_vocabularies": "mmkeras.alignment.pretrain",
    "export_tower": "mmkeras.alignment.export",
    "export_towers": "mmkeras.alignment.export",
}

# The same names as `_EXPORTS`, sorted.
__all__ = [
    "ContrastiveLoss",
    "DualEncoder",
    "LearnableTemperature",
    "NegativeQueue",
    "RetrievalResult",
    "TripletLoss",
    "ZeroShotHead",
    "ZeroShotResult",
    "build_classifier_from_encoder",
    "build_dual_encoder",
    "build_zero_shot_classifier",
    "calibrate_zero_shot",
    "chance_retrieval",
    "class_embeddings",
    "class_space",
    "classify_scores",
    "cross_modal_retrieval",
    "diversified_order",
    "embed",
    "encoder_vocabularies",
    "evaluate_retrieval",
    "exemplar_prototypes",
    "export_tower",
    "export_towers",
    "hub_occurrence",
    "list_hub_occurrence",
    "pretrain_encoder",
    "rescore",
    "retrieval_metrics",
    "retrieval_ranks",
    "retrieve",
    "retrieve_embeddings",
    "tower",
    "transfer_tower_weights",
    "zero_shot_classify",
]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
