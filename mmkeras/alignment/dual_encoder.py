"""The dual (multi-) encoder: one tower per modality into one shared, L2-normalised space.

Each tower is the classifier's own branch for its feature (built by the same
builder with the same options, so its weights can later seed a classifier),
followed by a linear projection `z = W x + b` and L2 normalisation. The model
maps `{feature_name: input}` to `{feature_name: embedding}`; trained with a
contrastive or triplet loss it puts an example's picture, description and
recording close together.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import layers, ops

from mmkeras.alignment.common import EMBEDDINGS, LOG_TEMPERATURE, QUEUE, QUEUE_LABELS, QUEUE_VALID, VALID
from mmkeras.alignment.contrastive import ContrastiveLoss
from mmkeras.alignment.negative_queue import NegativeQueue
from mmkeras.alignment.temperature import CLIP_MIN_TEMPERATURE, LearnableTemperature
from mmkeras.branches.common import check_positive, make_input
from mmkeras.checks import check_number, check_positive_int
from mmkeras.models.classifier import build_branch
from mmkeras.spec import MODALITY_OPTIONS, DatasetSpec, FeatureSpec, spec_from_dict
from mmkeras.training.training_view import FirstReplicaBuild

TOWER_SUFFIX = "_tower"
HEAD_SUFFIX = "_class_head"
SHARED_HEAD_NAME = "shared_class_head"
HEADS = ("per_tower", "shared")
BRANCH_SUFFIX = "_branch"
# Branch-builder arguments that are data, not architecture: never stored in the config.
DATA_OPTIONS = ("vocabulary", "corpus")


def build_dual_encoder(
    spec: DatasetSpec,
    modalities: Sequence[str] = ("image", "text"),
    embed_dim: int = 128,
    *,
    branch_dim: int = 128,
    dropout_rate: float = 0.1,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    branch_options: Mapping[str, Mapping[str, Any]] | None = None,
    initial_temperature: float = 0.07,
    learn_temperature: bool = True,
    min_temperature: float | None = CLIP_MIN_TEMPERATURE,
    max_temperature: float | None = None,
    queue_size: int = 0,
    classification_weight: float = 0.0,
    classification_head: str = "per_tower",
    name: str | None = None,
) -> DualEncoder:
    """Build a dual encoder that maps two or more modalities into one shared space.

    Use it to align modalities (CLIP-style pre-training), then retrieve across
    them (`mmkeras.alignment.retrieve`), classify unseen classes by their names
    (`zero_shot`), or start a classifier from the aligned branches
    (`build_classifier_from_encoder`).

    Args:
      spec: the dataset spec.
      modalities: two or more modalities ("image", "text", "audio") or feature
        names of the spec; a modality stands for the spec's one feature of that
        modality.
      embed_dim: width of the shared embedding space.
      branch_dim: width of each branch's own embedding (the classifier's
        `embed_dim`; keep them equal to transfer the branches).
      dropout_rate: dropout inside the branches.
      vocabularies: text feature name -> token list; by default each text
        feature's vocabulary is learned from the spec's train split.
      branch_options: extra branch-builder arguments keyed by modality or
        feature name, exactly as for `build_classifier`; e.g.
        `{"text": {"encoder": "keras_hub:<preset or folder>"}}` gives a text
        tower on a KerasHub preset (frozen; its tokenizer reads any prompt).
      initial_temperature: the contrastive softmax temperature to start from.
      learn_temperature: train the temperature (on a log scale) with the towers.
      min_temperature: the temperature's floor (default 0.01: CLIP's logit
        scale of at most 100), or None for none.
      max_temperature: the temperature's ceiling, or None for none. The
        learned temperature is projected back into the bounds after every step.
      queue_size: > 0 keeps a memory queue of the last `queue_size`
        embeddings of each tower (`NegativeQueue`), used by a
        `ContrastiveLoss` as extra candidates (negatives; same-class
        positives with `positives="labels"`); 0: no queue.
      classification_weight: > 0 gives each tower a linear classification
        head on its embedding (`spec.num_classes` classes), trained with the
        alignment loss as `alignment + classification_weight * mean over
        towers of the heads' crossentropy` (the joint objective: the labels
        shape the space, and each modality gets its own classifier); 0: no heads.
      classification_head: "per_tower" (each tower its own linear head) or
        "shared" (one linear head applied to every tower's embedding, as in
        deep supervised cross-modal retrieval: the same class regions must
        then hold for every modality, so same-class items of different
        modalities meet in the space).
      name: the model's name; default `<spec>_<feature>_<feature>_encoder`.

    Returns:
      An uncompiled `DualEncoder` taking `{feature_name: tensor}` (other keys
      are ignored) and returning `{feature_name: (batch, embed_dim)}` unit vectors.

    Raises:
      ValueError: for fewer than two modalities, a modality the spec lacks or
        has twice (name the feature then), or bad sizes.

    Example:
      >>> encoder = build_dual_encoder(load_spec("tiny"), ("image", "text"), embed_dim=32)
      >>> encoder.feature_names
      ('picture', 'caption')
      >>> encoder.compile("adam")          # ContrastiveLoss with the learned temperature
      >>> encoder.fit(make_dataset(spec, "train", batch_size=32, training=True), epochs=5)
    """
    check_positive(embed_dim, "embed_dim")
    check_positive(branch_dim, "branch_dim")
    features = resolve_features(spec, modalities)
    options = {name_: dict(value) for name_, value in (branch_options or {}).items()}
    towers = {
        feature.name: build_tower(
            spec, feature, embed_dim=embed_dim, branch_dim=branch_dim, dropout_rate=dropout_rate,
            vocabularies=vocabularies, branch_options=options,
        )
        for feature in features
    }
    stored = {key: {k: v for k, v in value.items() if k not in DATA_OPTIONS} for key, value in options.items()}
    return DualEncoder(
        towers,
        spec=spec_to_dict(spec, [f.name for f in features]),
        initial_temperature=initial_temperature,
        learn_temperature=learn_temperature,
        min_temperature=min_temperature,
        max_temperature=max_temperature,
        queue_size=queue_size,
        num_classes=spec.num_classes if classification_weight else None,
        classification_weight=classification_weight,
        classification_head=classification_head,
        branch_config={"embed_dim": branch_dim, "dropout_rate": dropout_rate, "branch_options": stored},
        name=name or "_".join([spec.name, *(f.name for f in features), "encoder"]),
    )


def resolve_features(spec: DatasetSpec, modalities: Sequence[str]) -> tuple[FeatureSpec, ...]:
    """Turn modalities or feature names into the spec's features, in the order given.

    Raises:
      ValueError: for fewer than two entries, an entry that is neither a
        feature nor a modality of the spec, a modality with several features,
        or a feature named twice.

    Example:
      >>> [f.name for f in resolve_features(load_spec("tiny"), ("audio", "caption"))]
      ['sound', 'caption']
    """
    if isinstance(modalities, str) or len(modalities) < 2:
        raise ValueError(
            f"A dual encoder aligns two or more modalities; got {modalities!r}. Pass e.g. ('image', 'text')."
        )
    available = ", ".join(f"{f.name} ({f.modality})" for f in spec.features)
    features = []
    for entry in modalities:
        if entry in spec.feature_names:
            features.append(spec.feature(entry))
            continue
        matches = [f for f in spec.features if f.modality == entry]
        if entry not in MODALITY_OPTIONS or not matches:
            raise ValueError(f"Spec {spec.name!r} has no feature or modality {entry!r}; it has {available}.")
        if len(matches) > 1:
            raise ValueError(
                f"Spec {spec.name!r} has several {entry} features ({[f.name for f in matches]}); name the "
                "feature instead of the modality."
            )
        features.append(matches[0])
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ValueError(f"Each feature may be aligned once, got {names} from {list(modalities)}.")
    return tuple(features)


def build_tower(
    spec: DatasetSpec,
    feature: FeatureSpec,
    *,
    embed_dim: int,
    branch_dim: int,
    dropout_rate: float,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    branch_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> keras.Model:
    """Build one tower: the classifier's branch, a linear projection and L2 normalisation.

    The branch is built by `build_classifier`'s own helper, so the same
    options give the same layers and weights as a classifier's `<feature>_branch`.

    Args:
      spec: the dataset spec (text vocabularies are learned from its train split).
      feature: the tower's feature.
      embed_dim: width of the shared space.
      branch_dim: width of the branch embedding.
      dropout_rate: dropout inside the branch.
      vocabularies: text feature name -> token list.
      branch_options: branch-builder arguments keyed by modality or feature name.

    Returns:
      A `keras.Model` named `<feature>_tower` taking the feature's decoded
      tensor and returning (batch, embed_dim) unit vectors; its sub-model
      `<feature>_branch` is the branch.
    """
    branch = build_branch(spec, feature, branch_dim, dropout_rate, vocabularies, branch_options)
    inputs = make_input(feature)
    embedding = branch(inputs)["embedding"]
    projected = layers.Dense(embed_dim, name=f"{feature.name}_projection")(embedding)
    # float32 even under mixed precision: the epsilon of the norm underflows in float16.
    normalised = layers.UnitNormalization(dtype="float32", name=f"{feature.name}_normalization")(projected)
    return keras.Model(inputs, normalised, name=f"{feature.name}{TOWER_SUFFIX}")


def spec_to_dict(spec: DatasetSpec, feature_names: Sequence[str] | None = None) -> dict:
    """The spec as the YAML mapping `spec_from_dict` reads (JSON-ready), optionally with fewer features.

    Example:
      >>> spec_from_dict(spec_to_dict(spec)).feature_names == spec.feature_names
      True
    """
    features = spec.features if feature_names is None else tuple(spec.feature(n) for n in feature_names)
    return {
        "name": spec.name,
        "features": [
            {
                "name": f.name,
                "modality": f.modality,
                "column": f.column,
                **{key: list(value) if isinstance(value, tuple) else value for key, value in f.options.items()},
                **({"branch": dict(f.branch)} if f.branch else {}),
            }
            for f in features
        ],
        "label": {"column": spec.label.column, "class_names": list(spec.label.class_names)},
        "splits": {
            name: {key: value for key, value in (("manifest", s.manifest), ("tfrecords", s.tfrecords),
                                                  ("select", s.select)) if value is not None}
            for name, s in spec.splits.items()
        },
        "data_dir": str(spec.data_dir),
        "on_error": spec.on_error,
    }


@keras.saving.register_keras_serializable(package="mmkeras")
class DualEncoder(FirstReplicaBuild, keras.Model):
    """Towers that embed each modality into one shared space, and the temperature they train with.

    Built by `build_dual_encoder`. `compile` defaults to `ContrastiveLoss`;
    `fit` takes the pipeline's `(features, label)` batches as they are: every
    pair of towers is aligned (the pair losses are averaged), rows where
    either modality is missing (`<name>_present` False) are left out of that
    pair, the learned temperature is handed to the loss, and the labels are
    passed on to losses with `positives="labels"`. With a `queue_size`, the
    last `queue_size` embeddings of each tower (and their labels) are kept in
    a `NegativeQueue`: a `ContrastiveLoss` compares every row with them too,
    and each training step enqueues its batch after computing the loss (the
    queue is saved with the weights; evaluation neither reads nor writes
    it). With a
    `classification_weight`, each tower also has a classification head
    (`class_logits`), trained on the labels with the alignment loss.

    Args:
      towers: feature name -> tower model (see `build_tower`), two or more.
      spec: the spec as `spec_to_dict` writes it, restricted to the towers' features.
      initial_temperature: the temperature's starting value.
      min_temperature: the smallest temperature the loss will use (None: no floor).
      learn_temperature: train the temperature.
      max_temperature: the largest temperature the loss will use (None: no ceiling).
      queue_size: the memory queue's length (0: no queue).
      num_classes: the heads' number of classes (needed with a classification weight).
      classification_weight: the weight of the heads' crossentropy in the loss; 0: no heads.
      classification_head: "per_tower" (a head per tower) or "shared" (one head for every tower).
      branch_config: how the branches were built (`embed_dim`, `dropout_rate`,
        `branch_options`), for `build_classifier_from_encoder`.

    Call arguments:
      inputs: a mapping holding at least one tensor per tower, named after its feature.
      training: whether dropout and augmentation are active.

    Returns:
      A dict feature name -> (batch, embed_dim) L2-normalised embeddings.

    Raises:
      ValueError: for fewer than two towers or towers that disagree on the
        embedding width or do not match the spec's features.

    Example:
      >>> encoder = build_dual_encoder(spec, ("image", "audio"), embed_dim=32)
      >>> sorted(encoder({"picture": images, "sound": waves}))
      ['picture', 'sound']
      >>> encoder.get_tower("sound").output.shape
      (None, 32)
    """

    def __init__(
        self,
        towers: Mapping[str, keras.Model],
        spec: Mapping[str, Any],
        initial_temperature: float = 0.07,
        min_temperature: float | None = CLIP_MIN_TEMPERATURE,
        learn_temperature: bool = True,
        num_classes: int | None = None,
        classification_weight: float = 0.0,
        branch_config: Mapping[str, Any] | None = None,
        max_temperature: float | None = None,
        queue_size: int = 0,
        classification_head: str = "per_tower",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(towers) < 2:
            raise ValueError(f"A DualEncoder needs two or more towers, got {list(towers)}.")
        widths = {name: tower.output.shape[-1] for name, tower in towers.items()}
        if len(set(widths.values())) != 1:
            raise ValueError(f"Every tower must output the same embedding width, got {widths}.")
        self.spec_config = dict(spec)
        self._spec = spec_from_dict(self.spec_config)
        if tuple(towers) != self._spec.feature_names:
            raise ValueError(
                f"The towers {list(towers)} must be the spec's features {list(self._spec.feature_names)}, in order."
            )
        self.towers = dict(towers)
        self.temperature_layer = LearnableTemperature(
            initial_temperature, min_temperature, learn_temperature, max_temperature, name="temperature"
        )
        self.initial_temperature = self.temperature_layer.initial_temperature
        self.min_temperature = self.temperature_layer.min_temperature
        self.max_temperature = self.temperature_layer.max_temperature
        self.learn_temperature = bool(learn_temperature)
        self.queue_size = check_positive_int(queue_size, "queue_size", allow_zero=True, hint=" (0: no queue)")
        # The queue is only made when asked for: encoders without one keep their old weights list.
        self.negative_queue = (
            NegativeQueue(self.queue_size, tuple(self.towers), self.embed_dim, name="negative_queue")
            if self.queue_size else None
        )
        self.branch_config = dict(branch_config or {})
        self.classification_weight = check_number(classification_weight, "classification_weight", inclusive=True)
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes")
        if self.classification_weight and self.num_classes is None:
            raise ValueError(
                f"A classification_weight of {classification_weight} needs `num_classes` for the towers' heads."
            )
        if classification_head not in HEADS:
            raise ValueError(f"classification_head must be one of {list(HEADS)}, got {classification_head!r}.")
        self.classification_head = classification_head
        heads = {}
        self.shared_head = None
        if self.classification_weight and classification_head == "shared":
            # One layer, tracked once (not once per tower), so its weights are saved once.
            self.shared_head = layers.Dense(self.num_classes, dtype="float32", name=SHARED_HEAD_NAME)
            self.shared_head.build((None, self.embed_dim))
        elif self.classification_weight:
            for name_ in self.towers:
                heads[name_] = layers.Dense(self.num_classes, dtype="float32", name=f"{name_}{HEAD_SUFFIX}")
                heads[name_].build((None, self.embed_dim))
        self.heads = heads
        self.build()

    def build(self, input_shape=None):
        # The towers are functional models, built when made; nothing is left to create.
        self.built = True

    def call(self, inputs, training=None):
        missing = [name for name in self.towers if name not in inputs]
        if missing:
            raise ValueError(
                f"{self.name} needs an input for each tower {list(self.towers)}; missing {missing}, "
                f"got {sorted(inputs)}."
            )
        return {name: tower(inputs[name], training=training) for name, tower in self.towers.items()}

    def compile(self, optimizer="adam", loss=None, **kwargs):
        """Configure training; `loss` defaults to `ContrastiveLoss()` (with this model's learned temperature).

        The temperature trains only with a `ContrastiveLoss` (and `learn_temperature`).

        Args:
          optimizer: a Keras optimizer or its name.
          loss: an alignment loss (`ContrastiveLoss`, `TripletLoss`, or any
            Keras loss taking a (batch, 2, dim) stack or the dict form).
          **kwargs: other `keras.Model.compile` arguments.

        Raises:
          TypeError: if `loss` is not a `keras.losses.Loss` instance.
        """
        loss = ContrastiveLoss() if loss is None else loss
        if not isinstance(loss, keras.losses.Loss):
            raise TypeError(
                f"A DualEncoder trains with an alignment loss instance such as ContrastiveLoss() or TripletLoss(), "
                f"got {loss!r}. Per-output losses do not apply: the loss compares the towers' outputs."
            )
        if self.negative_queue is not None and not isinstance(loss, ContrastiveLoss):
            raise ValueError(
                f"{self.name} has a memory queue (queue_size={self.queue_size}), which only a ContrastiveLoss "
                f"uses; got {type(loss).__name__}. Compile with ContrastiveLoss() or build with queue_size=0."
            )
        # Only a loss with a temperature trains it (a triplet loss has none to learn).
        self.temperature_layer.trainable = self.learn_temperature and isinstance(loss, ContrastiveLoss)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def get_compile_config(self):
        return super().get_compile_config()

    def compile_from_config(self, config):
        # The custom `compile` takes the same arguments, so a saved, compiled encoder reloads compiled.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.loss is None:
            raise ValueError(f"Compile {self.name} with an alignment loss first: `encoder.compile('adam')`.")
        labels = y if getattr(self.loss, "positives", "pairs") == "labels" else None  # None: zeros (see AlignmentLoss)
        log_temperature = self.temperature_layer.log_value()
        presence = {name: _presence(x, name, y_pred) for name in self.towers}
        queued = None if self.negative_queue is None else self.negative_queue.read()
        pair_losses = []
        for first, second in itertools.combinations(self.towers, 2):
            pair = {
                EMBEDDINGS: ops.stack([y_pred[first], y_pred[second]], axis=1),
                LOG_TEMPERATURE: log_temperature,
                VALID: ops.logical_and(presence[first], presence[second]),
            }
            if queued is not None:
                embeddings, present, queue_labels = queued
                pair[QUEUE] = ops.stack([embeddings[first], embeddings[second]], axis=1)
                pair[QUEUE_VALID] = ops.logical_and(present[first], present[second])
                pair[QUEUE_LABELS] = queue_labels
            pair_losses.append(self.loss(labels, pair, sample_weight))
        total = ops.sum(ops.stack(pair_losses)) / len(pair_losses)
        if queued is not None and training:
            # After the loss read the queue: a batch is never its own negative twice.
            self.negative_queue.enqueue({name: y_pred[name] for name in self.towers}, y, presence)
        if self.has_heads:
            total = total + self.classification_weight * self._classification_loss(x, y, y_pred, sample_weight)
        for extra in self.losses:
            total = total + self._aggregate_additional_loss(extra)
        return total

    def _classification_loss(self, x, y, y_pred, sample_weight):
        """The heads' sparse crossentropy, averaged over each tower's present rows, then over the towers."""
        if y is None:
            raise ValueError(
                f"{self.name} has classification heads (classification_weight={self.classification_weight}), so "
                "`fit` needs the class ids as targets: pass `(features, label)` batches."
            )
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        logits = self.class_logits(y_pred)
        losses = []
        for name, value in logits.items():
            per_row = keras.losses.sparse_categorical_crossentropy(labels, value, from_logits=True)
            weight = ops.cast(_presence(x, name, y_pred), "float32")
            if sample_weight is not None:
                weight = weight * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            losses.append(ops.sum(per_row * weight) / ops.maximum(ops.sum(weight), 1.0))
        return ops.sum(ops.stack(losses)) / len(losses)

    def class_logits(self, embeddings: Mapping[str, Any]) -> dict:
        """Each tower's classification-head logits for its embeddings (the joint objective's heads).

        Args:
          embeddings: feature name -> (batch, embed_dim) embeddings, as the encoder returns them.

        Returns:
          Feature name -> (batch, num_classes) logits, for the towers named in `embeddings`.

        Raises:
          ValueError: if the encoder has no heads (built without a `classification_weight`).

        Example:
          >>> encoder = build_dual_encoder(spec, ("image", "audio"), classification_weight=1.0)
          >>> logits = encoder.class_logits(encoder(batch))    # {"picture": (n, 10), "sound": (n, 10)}
        """
        if not self.has_heads:
            raise ValueError(
                f"{self.name} has no classification heads; build it with a classification_weight > 0 "
                "(build_dual_encoder(..., classification_weight=1.0))."
            )
        if self.shared_head is not None:
            return {name: self.shared_head(value) for name, value in embeddings.items() if name in self.towers}
        return {name: self.heads[name](value) for name, value in embeddings.items() if name in self.heads}

    @property
    def has_heads(self) -> bool:
        """Whether the encoder has classification heads (a `classification_weight` > 0)."""
        return bool(self.heads) or self.shared_head is not None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The towers' feature names, in order."""
        return tuple(self.towers)

    @property
    def embed_dim(self) -> int:
        """The width of the shared embedding space."""
        return int(next(iter(self.towers.values())).output.shape[-1])

    @property
    def spec(self) -> DatasetSpec:
        """The dataset spec restricted to the towers' features (for decoding raw inputs)."""
        return self._spec

    @property
    def temperature(self) -> float:
        """The current softmax temperature of the contrastive loss."""
        return self.temperature_layer.temperature

    def get_tower(self, feature_name: str) -> keras.Model:
        """Return the tower of a feature: its decoded input -> its normalised embedding.

        Raises:
          ValueError: if the encoder has no tower for that feature.
        """
        if feature_name not in self.towers:
            raise ValueError(f"{self.name} has no tower {feature_name!r}; it has {list(self.towers)}.")
        return self.towers[feature_name]

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "towers": {name: keras.saving.serialize_keras_object(tower) for name, tower in self.towers.items()},
            "spec": self.spec_config,
            "initial_temperature": self.initial_temperature,
            "min_temperature": self.min_temperature,
            "max_temperature": self.max_temperature,
            "learn_temperature": self.learn_temperature,
            "queue_size": self.queue_size,
            "num_classes": self.num_classes,
            "classification_weight": self.classification_weight,
            "classification_head": self.classification_head,
            "branch_config": self.branch_config,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        towers = {
            name: keras.saving.deserialize_keras_object(tower, custom_objects=custom_objects)
            for name, tower in config.pop("towers").items()
        }
        return cls(towers, **config)


def tower(encoder: DualEncoder, feature_name: str) -> keras.Model:
    """Return `encoder.get_tower(feature_name)`: one modality's own embedding model.

    Example:
      >>> tower(encoder, "caption")(tf.constant(["a red ball"])).shape
      TensorShape([1, 128])
    """
    return encoder.get_tower(feature_name)


def _presence(x, feature_name: str, y_pred):
    """(batch,) bool presence of a feature from the batch's `<name>_present` flag (all True without one)."""
    flag = x.get(f"{feature_name}_present") if isinstance(x, Mapping) else None
    if flag is None:
        return ops.ones(ops.shape(y_pred[feature_name])[:1], dtype="bool")
    return ops.reshape(ops.cast(flag, "bool"), (-1,))
