"""CrossAttentionFusion: each modality's steps attend to the other modalities' steps."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.fusion.cross_attention import CrossAttentionFusion


def _fuse(layer, batch, embeddings=None, sequences=None, presence=None):
    return layer(
        batch.embeddings if embeddings is None else embeddings,
        presence=presence,
        sequences=batch.sequences if sequences is None else sequences,
    )


def test_cross_attention_fusion_output_shape(fusion_batch):
    layer = CrossAttentionFusion(units=16, num_heads=2)
    assert tuple(_fuse(layer, fusion_batch, presence=fusion_batch.presence).shape) == (2, 16)


def test_cross_attention_fusion_survives_save_and_load(fusion_batch, assert_survives_save_and_load):
    assert_survives_save_and_load(CrossAttentionFusion(units=16, num_heads=2), fusion_batch, with_sequences=True)


def test_absent_modality_steps_and_embedding_are_ignored(fusion_batch, with_replaced_embedding):
    layer = CrossAttentionFusion(units=16, num_heads=2)
    fused = _fuse(layer, fusion_batch, presence=fusion_batch.presence)
    assert not np.allclose(fused[0], _fuse(layer, fusion_batch, presence=fusion_batch.all_present)[0])
    changed = _fuse(
        layer,
        fusion_batch,
        embeddings=with_replaced_embedding(fusion_batch.embeddings, 1),
        sequences=with_replaced_embedding(fusion_batch.sequences, 1),
        presence=fusion_batch.presence,
    )
    np.testing.assert_array_equal(changed[0], fused[0])
    assert not np.allclose(changed[1], fused[1])


def test_no_other_modality_present_is_finite(fusion_batch):
    layer = CrossAttentionFusion(units=16, num_heads=2)
    only_first = np.array([[1, 0, 0], [0, 0, 0]], "float32")
    assert np.all(np.isfinite(_fuse(layer, fusion_batch, presence=only_first)))


def test_single_modality_attends_to_itself(fusion_batch):
    layer = CrossAttentionFusion(units=8, num_heads=2)
    fused = layer(fusion_batch.embeddings[:1], sequences=fusion_batch.sequences[:1])
    assert tuple(fused.shape) == (2, 8)
    assert np.all(np.isfinite(fused))


def test_all_ones_presence_equals_no_presence(fusion_batch):
    layer = CrossAttentionFusion(units=16, num_heads=2)
    np.testing.assert_allclose(
        _fuse(layer, fusion_batch, presence=fusion_batch.all_present), _fuse(layer, fusion_batch), rtol=1e-6
    )


def test_missing_sequences_raise_a_clear_error(fusion_batch):
    with pytest.raises(ValueError, match="sequences="):
        CrossAttentionFusion(units=8)(fusion_batch.embeddings)


@pytest.mark.parametrize("kwargs", [{"units": 0}, {"num_heads": 0}, {"dropout_rate": 1.0}, {"activation": "nope"}])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        CrossAttentionFusion(**kwargs)


def test_gradients_reach_every_embedding_and_sequence(fusion_batch, assert_gradients_reach_inputs):
    layer = CrossAttentionFusion(units=16, num_heads=2, activation=None)
    watched = list(fusion_batch.embeddings) + list(fusion_batch.sequences)
    assert_gradients_reach_inputs(lambda: _fuse(layer, fusion_batch), watched)


def test_config_round_trip():
    layer = CrossAttentionFusion(units=12, num_heads=3, dropout_rate=0.1, activation="gelu", name="fuse")
    config = layer.get_config()
    assert CrossAttentionFusion.from_config(config).get_config() == config
    assert (config["units"], config["num_heads"], config["dropout_rate"], config["activation"]) == (12, 3, 0.1, "gelu")


def _with_mask(sequence, mask):
    tensor = tf.convert_to_tensor(sequence)
    tensor._keras_mask = tf.constant(mask)  # how Keras hands a layer's mask on (a text branch's padding)
    return tensor


def test_padded_steps_are_left_out_of_the_keys_and_the_means(fusion_batch):
    layer = CrossAttentionFusion(units=16, num_heads=2)
    sequences = [np.asarray(s) for s in fusion_batch.sequences]
    steps = sequences[0].shape[1]
    mask = np.arange(steps)[np.newaxis] < np.array([[2], [steps]])  # the first example: 2 valid steps
    moved = sequences[0].copy()
    moved[0, 2:] += 5.0  # only padded steps change
    fused = _fuse(layer, fusion_batch, sequences=[_with_mask(sequences[0], mask), *sequences[1:]])
    changed = _fuse(layer, fusion_batch, sequences=[_with_mask(moved, mask), *sequences[1:]])
    np.testing.assert_allclose(changed, fused, rtol=1e-5, atol=1e-6)
    # Without the option (configurations saved before it), padded steps count as steps.
    unmasked = CrossAttentionFusion.from_config({k: v for k, v in layer.get_config().items() if k != "mask_padding"})
    assert not unmasked.mask_padding
    _fuse(unmasked, fusion_batch)  # builds it
    unmasked.set_weights(layer.get_weights())
    unmasked_fused = _fuse(unmasked, fusion_batch, sequences=[_with_mask(sequences[0], mask), *sequences[1:]])
    unmasked_changed = _fuse(unmasked, fusion_batch, sequences=[_with_mask(moved, mask), *sequences[1:]])
    assert not np.allclose(unmasked_changed[0], unmasked_fused[0], atol=1e-4)
