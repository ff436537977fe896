"""Presence flags, modality dropout and the learned missing embedding."""
from __future__ import annotations

import numpy as np
import pytest

from mmkeras.models.presence import (
    MissingModalityEmbedding,
    ModalityDropout,
    PresenceFlags,
)


def test_presence_flags_treat_none_as_present():
    embeddings = [np.ones((3, 4), "float32"), np.ones((3, 2), "float32")]
    flags = PresenceFlags()(embeddings, [None, np.array([True, False, True])]).numpy()
    np.testing.assert_array_equal(flags, [[1, 1], [1, 0], [1, 1]])


def test_modality_dropout_never_drops_everything_and_is_off_at_inference():
    layer = ModalityDropout(0.9, seed=1)
    presence = np.ones((500, 3), "float32")
    dropped = layer(presence, training=True).numpy()
    assert (dropped.sum(axis=1) >= 1).all()
    assert 0.1 < dropped.mean() < 0.9  # it does drop
    np.testing.assert_array_equal(layer(presence, training=False).numpy(), presence)
    # An absent modality never comes back.
    partial = presence.copy()
    partial[:, 0] = 0
    assert (layer(partial, training=True).numpy()[:, 0] == 0).all()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ModalityDropout(1.0)


def test_missing_embedding_replaces_only_absent_modalities():
    layer = MissingModalityEmbedding()
    embeddings = [np.full((2, 3), 5.0, "float32"), np.full((2, 2), 7.0, "float32")]
    layer.build([(None, 3), (None, 2)])
    layer.missing[1].assign([-1.0, -2.0])
    out = layer(embeddings, np.array([[1.0, 0.0], [1.0, 1.0]], "float32"))
    np.testing.assert_array_equal(out[0].numpy(), embeddings[0])
    np.testing.assert_array_equal(out[1].numpy(), [[-1.0, -2.0], [7.0, 7.0]])
