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


def test_modality_dropout_gives_each_modality_its_own_rate():
    layer = ModalityDropout({"text": 0.0, "image": 0.6}, names=["image", "text"], seed=3)
    dropped = layer(np.ones((4000, 2), "float32"), training=True).numpy()
    # Column order follows `names`, not the mapping: the text column is never dropped.
    np.testing.assert_array_equal(dropped[:, 1], 1.0)
    assert 0.35 < dropped[:, 0].mean() < 0.45  # kept with probability 0.4
    assert layer.get_config()["rate"] == {"image": 0.6, "text": 0.0}
    assert layer.get_config()["names"] == ["image", "text"]
    # Three columns with different rates: each is dropped about as often as its rate asks.
    rates = {"a": 0.1, "b": 0.3, "c": 0.5}
    three = ModalityDropout(rates, names=list(rates), seed=0)(np.ones((4000, 3), "float32"), training=True).numpy()
    dropped_share = 1.0 - three.mean(axis=0)
    assert dropped_share[0] < dropped_share[1] < dropped_share[2]
    np.testing.assert_allclose(dropped_share, [0.1, 0.3, 0.5], atol=0.05)


def test_modality_dropout_with_one_rate_keeps_its_config():
    config = ModalityDropout(0.3, seed=2).get_config()
    assert (config["rate"], config["names"], config["seed"]) == (0.3, None, 2)
    restored = ModalityDropout.from_config(config)
    assert restored.rate == 0.3 and restored.rates is None


@pytest.mark.parametrize(
    ("rate", "names", "message"),
    [
        ({"txt": 0.5, "image": 0.3}, ["image", "text"], r"names 'txt'.*expected names from \['image', 'text'\]"),
        ({"image": 0.3}, ["image", "text"], r"no rate for \['text'\].*each of \['image', 'text'\]"),
        ({"image": 0.3, "text": 1.0}, ["image", "text"], r"`rate\['text'\]` must be a number in \[0, 1\), got 1.0"),
        ({"image": 0.3, "text": True}, ["image", "text"], r"`rate\['text'\]` must be a number"),
        ({"image": 0.3}, None, r"no `names`"),
        (-0.1, None, r"`rate` must be a number in \[0, 1\)"),
    ],
)
def test_modality_dropout_rejects_bad_names_and_rates(rate, names, message):
    with pytest.raises(ValueError, match=message):
        ModalityDropout(rate, names=names)


def test_modality_dropout_rates_must_match_the_flag_columns():
    layer = ModalityDropout({"image": 0.3, "text": 0.5}, names=["image", "text"])
    with pytest.raises(ValueError, match=r"rates for 2 modalities \['image', 'text'\].*3 columns"):
        layer(np.ones((2, 3), "float32"), training=True)


def test_missing_embedding_replaces_only_absent_modalities():
    layer = MissingModalityEmbedding()
    embeddings = [np.full((2, 3), 5.0, "float32"), np.full((2, 2), 7.0, "float32")]
    layer.build([(None, 3), (None, 2)])
    layer.missing[1].assign([-1.0, -2.0])
    out = layer(embeddings, np.array([[1.0, 0.0], [1.0, 1.0]], "float32"))
    np.testing.assert_array_equal(out[0].numpy(), embeddings[0])
    np.testing.assert_array_equal(out[1].numpy(), [[-1.0, -2.0], [7.0, 7.0]])
