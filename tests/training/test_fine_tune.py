"""Two-phase fine-tuning: which parts count as pretrained, how their top layers unfreeze, and both phases."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.branches import build_image_branch
from mmkeras.models.classifier import build_classifier
from mmkeras.training.config import TrainingConfig, load_run_config
from mmkeras.training.fine_tune import (
    fine_tune,
    prepare_fine_tuning,
    pretrained_parts,
    unfreeze_top_layers,
)


class ImageEncoder(tf.Module):
    """A TF Hub-like image encoder: (batch, height, width, 3) floats in [0, 1] -> (batch, 4)."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal((3, 4), seed=(1, 2)), name="kernel")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return tf.tanh(tf.reduce_mean(images, axis=[1, 2]) @ self.kernel)


@pytest.fixture(scope="module")
def image_encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoders") / "image"
    tf.saved_model.save(ImageEncoder(), str(folder))
    return str(folder)


def _hub_classifier(spec, image_encoder):
    return build_classifier(
        spec.with_features(["picture"]), units=8, embed_dim=8,
        branch_options={"picture": {"encoder": "hub:" + image_encoder, "augment": False}}, seed=0,
    )


def test_hub_encoder_is_a_pretrained_part_unfrozen_as_one_layer(tiny_spec, image_encoder):
    model = _hub_classifier(tiny_spec, image_encoder)
    assert [part.name for part in pretrained_parts(model)] == ["hub_encoder"]
    encoder = pretrained_parts(model)[0]
    assert unfreeze_top_layers(model, 0) == [] and not encoder.trainable
    trainable_before = len(model.trainable_weights)
    assert unfreeze_top_layers(model, 3) == ["hub_encoder"]
    assert encoder.trainable and len(model.trainable_weights) == trainable_before + 1
    assert pretrained_parts(model) == []
    with pytest.raises(ValueError, match="no frozen pretrained part"):
        unfreeze_top_layers(model, 1)
    with pytest.raises(ValueError, match="non-negative"):
        unfreeze_top_layers(model, -1)


def test_backbone_unfreezes_its_top_layers_but_not_batch_norm(tiny_spec):
    branch = build_image_branch(
        tiny_spec.feature("picture"), backbone="mobilenet_v3_small", trainable=False, augment=False, embed_dim=4
    )
    (backbone,) = pretrained_parts(branch)
    assert isinstance(backbone, keras.Model) and backbone.trainable_weights == []
    names = unfreeze_top_layers(branch, 3)
    weighted = [layer for layer in backbone.layers if layer.weights]
    trainable = [layer.name for layer in weighted if layer.trainable]
    assert trainable == names and len(names) == 3
    assert names == [layer.name for layer in weighted if not isinstance(layer, keras.layers.BatchNormalization)][-3:]
    assert not any(layer.trainable for layer in weighted if isinstance(layer, keras.layers.BatchNormalization))


def test_prepare_fine_tuning_loads_the_head_phase_weights(tiny_spec, image_encoder, tmp_path):
    head = _hub_classifier(tiny_spec, image_encoder)
    logits = head.get_layer("logits")
    logits.kernel.assign(np.full(logits.kernel.shape, 0.5, "float32"))
    head.save_weights(tmp_path / "head.weights.h5")
    fresh = _hub_classifier(tiny_spec, image_encoder)
    assert not np.allclose(fresh.get_layer("logits").kernel.numpy(), 0.5)
    assert prepare_fine_tuning(fresh, weights=tmp_path / "head.weights.h5", unfreeze_top=1) == ["hub_encoder"]
    np.testing.assert_allclose(fresh.get_layer("logits").kernel.numpy(), 0.5)
    with pytest.raises(FileNotFoundError, match="head phase"):
        prepare_fine_tuning(fresh, weights=tmp_path / "missing.keras")


def test_fine_tune_checks_its_arguments():
    with pytest.raises(ValueError, match="head_epochs"):
        fine_tune("tiny", head_epochs=0)
    with pytest.raises(ValueError, match="unfreeze_top"):
        fine_tune("tiny", unfreeze_top=-2)
    with pytest.raises(ValueError, match="instead of `epochs`"):
        fine_tune("tiny", epochs=3)


@pytest.mark.slow
def test_fine_tune_trains_the_head_then_the_encoder(tiny_spec, image_encoder, tmp_path):
    original = tf.saved_model.load(image_encoder).kernel.numpy()
    result = fine_tune(
        tiny_spec.with_features(["picture"]), head_epochs=1, fine_tune_epochs=1, unfreeze_top=1,
        fine_tune_learning_rate=0.05, output_dir=tmp_path / "run", batch_size=16, units=8, embed_dim=8,
        branch_options={"picture": {"encoder": "hub:" + image_encoder, "augment": False}},
        strategy="default", optimizer="adam", seed=0, verbose=0,
    )

    def encoder_kernel(model):
        return model.get_layer("picture_branch").get_layer("hub_encoder").encoder_variables[0].numpy()

    assert result.unfrozen == ("hub_encoder",)
    assert result.head.final_model_path.is_file() and result.fine_tune.final_model_path.is_file()
    # Phase 1 leaves the pretrained encoder as it was; phase 2 trains it, at the lower learning rate.
    np.testing.assert_allclose(encoder_kernel(result.head.model), original)
    assert not np.allclose(encoder_kernel(result.model), original)
    assert load_run_config(result.fine_tune.config_path).training.learning_rate == pytest.approx(0.05)
    head_rate = load_run_config(result.head.config_path).training.learning_rate
    assert head_rate == pytest.approx(TrainingConfig().learning_rate)
    # Phase 2 started from phase 1's head, not from a fresh one.
    head_logits = result.head.model.get_layer("logits").kernel.numpy()
    tuned_logits = result.model.get_layer("logits").kernel.numpy()
    assert np.abs(tuned_logits - head_logits).max() < np.abs(head_logits).max()
