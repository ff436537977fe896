"""Spec loading: the bundled specs parse, and malformed specs say what to fix."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import mmkeras
from mmkeras.spec import load_spec, spec_from_dict

VALID = {
    "name": "toy",
    "label": {"column": "label", "class_names": ["a", "b"]},
    "features": [
        {"name": "caption", "modality": "text", "sequence_length": 5},
        {"name": "picture", "modality": "image", "image_size": [8, 8], "channels": 1},
        {"name": "sound", "modality": "audio", "sample_rate": 8000, "clip_seconds": 0.5},
    ],
    "splits": {"train": "train.csv", "test": {"tfrecords": "test-*.tfrecord"}},
}


def test_tiny_spec_loads_with_defaults_filled_in():
    spec = load_spec("tiny")
    assert spec.feature_names == ("caption", "picture", "sound")
    assert spec.num_classes == 3
    assert spec.feature("picture").shape == (16, 16, 3)
    assert spec.feature("sound").shape == (2000,)
    assert spec.feature("sound").options["frame_ms"] == 25.0
    assert spec.split("train").select == "train"
    assert spec.feature("caption").presence_key == "caption_present"


def test_spec_from_dict_shapes_dtypes_and_paths(tmp_path):
    spec = spec_from_dict(VALID, path=tmp_path / "toy.yaml")
    assert [f.dtype for f in spec.features] == ["string", "uint8", "float32"]
    assert spec.feature("picture").shape == (8, 8, 1)
    assert spec.feature("sound").num_samples == 4000
    assert spec.split("train").manifest == "train.csv"
    assert spec.split("test").tfrecords == "test-*.tfrecord"
    assert spec.data_dir == tmp_path
    assert spec.with_features(["sound"]).feature_names == ("sound",)


@pytest.mark.parametrize(
    "change, key, hint",
    [
        ({"features": [{"name": "x", "modality": "video"}]}, "features[0].modality", "'audio', 'image', 'text'"),
        ({"features": [{"name": "x", "modality": "text", "colour": 1}]}, "features[0].colour", "allowed keys"),
        ({"features": [{"name": "x", "modality": "image", "channels": 4}]}, "features[0].channels", "1 or 3"),
        ({"features": [{"name": "x", "modality": "audio", "sample_rate": -1}]}, "features[0].sample_rate", "positive"),
        ({"label": {"class_names": ["only"]}}, "label.class_names", "at least 2"),
        ({"on_error": "ignore"}, "on_error", "'raise', 'skip'"),
        ({"splits": {"train": {"manifest": "a.csv", "tfrecords": "b"}}}, "splits.train", "exactly one"),
        ({"splits": {"train": {"tfrecords": None}}}, "splits.train", "exactly one"),
        ({"features": [{"name": "x", "modality": "image", "channels": True}]}, "features[0].channels", "1 or 3"),
        ({"shards": 3}, "shards", "allowed keys"),
        ({"features": [{"name": "my-feature", "modality": "text"}]}, "features[0].name", "letters"),
        ({"features": [{"name": "x", "modality": "image", "image_size": ["a", 8]}]}, "features[0].image_size",
         "positive integers"),
        ({"features": [{"name": "x", "modality": "image", "image_size": [8.5, 8]}]}, "features[0].image_size",
         "positive integers"),
        ({"features": [{"name": "x", "modality": "text", "vocab_size": 3.7}]}, "features[0].vocab_size",
         "positive integer"),
        ({"features": [{"name": "x", "modality": "audio", "resample": "yes"}]}, "features[0].resample", "true or false"),
    ],
)
def test_malformed_spec_names_file_key_and_allowed_values(tmp_path, change, key, hint):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**VALID, **change}))
    with pytest.raises(ValueError) as error:
        load_spec(path)
    message = str(error.value)
    assert str(path) in message and repr(key) in message and hint in message


def test_missing_required_key_and_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in VALID.items() if k != "label"}))
    with pytest.raises(ValueError, match="'label': is required"):
        load_spec(path)
    path.write_text("name: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_spec(path)


def test_unknown_spec_name_lists_bundled_specs():
    with pytest.raises(FileNotFoundError, match="tiny"):
        load_spec("no-such-spec")


@pytest.mark.parametrize("name", ["tiny", "avmnist", "tuxpaint"])
def test_bundled_specs_are_package_data(name):
    # Inside the package (installed with the wheel), not in the source checkout around it.
    assert load_spec(name).path == Path(mmkeras.__file__).resolve().parent / "data_specs" / f"{name}.yaml"


def test_spec_is_read_with_safe_load(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_spec(path)


def test_pretrained_encoder_keys_are_branch_options(tmp_path):
    features = [{"name": "photo", "modality": "image", "backbone": "resnet50", "weights": None,
                 "branch": {"embed_dim": 32}}]
    spec = spec_from_dict({**VALID, "features": features}, path=tmp_path / "s.yaml")
    assert spec.feature("photo").branch == {"embed_dim": 32, "backbone": "resnet50", "weights": None}


def test_relative_encoder_and_weights_paths_are_read_beside_the_spec(tmp_path, monkeypatch):
    specs = tmp_path / "project" / "specs"
    (specs / "models" / "use").mkdir(parents=True)
    (specs / "presets" / "bert").mkdir(parents=True)
    (specs / "weights.h5").write_bytes(b"")
    features = [
        {"name": "caption", "modality": "text", "encoder": "hub:models/use", "preprocessor": "hub:https://x/y"},
        {"name": "photo", "modality": "image", "backbone": "resnet50", "weights": "weights.h5"},
        {"name": "photo2", "modality": "image", "backbone": "resnet50", "weights": "imagenet"},
        {"name": "title", "modality": "text", "encoder": "keras_hub:presets/bert"},
        {"name": "title2", "modality": "text", "encoder": "keras_hub:bert_tiny_en_uncased"},
        {"name": "other", "modality": "text", "encoder": "hub:not/there"},
    ]
    (specs / "s.yaml").write_text(yaml.safe_dump({**VALID, "features": features}))
    monkeypatch.chdir(tmp_path)  # the working directory is not the spec's folder
    spec = load_spec(specs / "s.yaml")
    assert spec.feature("caption").branch == {"encoder": f"hub:{specs / 'models' / 'use'}",
                                              "preprocessor": "hub:https://x/y"}
    assert spec.feature("photo").branch["weights"] == str(specs / "weights.h5")
    assert spec.feature("photo2").branch["weights"] == "imagenet"
    assert spec.feature("title").branch["encoder"] == f"keras_hub:{specs / 'presets' / 'bert'}"
    assert spec.feature("title2").branch["encoder"] == "keras_hub:bert_tiny_en_uncased"
    assert spec.feature("other").branch["encoder"] == "hub:not/there"  # left for the loader's own error


def test_size_limits_default_to_real_input_sizes_and_can_be_set():
    spec = spec_from_dict(VALID)
    # Real inputs come at the camera's or the speaker's size, not the model's: a 12 Mpx photo, 30 s.
    assert spec.feature("picture").limit == ("max_image_pixels", 4032 * 3024)
    assert spec.feature("sound").limit == ("max_audio_seconds", 30.0)
    assert spec.feature("caption").limit == ("max_text_bytes", 65536)

    def defaults(**options):
        feature = {"name": "x", **options}
        return spec_from_dict({**VALID, "features": [feature]}).feature("x").limit[1]

    assert defaults(modality="image", image_size=[480, 480]) == 64 * 480 * 480  # 64 x the feature if more
    assert defaults(modality="image", image_size=[1024, 1024]) == 4096 * 4096  # capped at 16 Mpx
    assert defaults(modality="audio", clip_seconds=10.0) == 40.0  # 4 x clip_seconds if more
    chosen = {**VALID, "features": [
        {"name": "photo", "modality": "image", "image_size": [8, 8], "max_image_pixels": 1_000_000},
        {"name": "sound", "modality": "audio", "clip_seconds": 1.0, "max_audio_seconds": 30},
        {"name": "caption", "modality": "text", "max_text_bytes": 10},
    ]}
    limits = [feature.limit for feature in spec_from_dict(chosen).features]
    assert limits == [("max_image_pixels", 1_000_000), ("max_audio_seconds", 30.0), ("max_text_bytes", 10)]


@pytest.mark.parametrize(
    "feature, key, hint",
    [
        ({"modality": "image", "image_size": [8, 8], "max_image_pixels": 63}, "max_image_pixels", "at least 64"),
        ({"modality": "image", "max_image_pixels": 1.5e6}, "max_image_pixels", "positive integer"),
        ({"modality": "audio", "clip_seconds": 2.0, "max_audio_seconds": 1}, "max_audio_seconds", "clip_seconds"),
        ({"modality": "audio", "max_audio_seconds": "1h"}, "max_audio_seconds", "positive number"),
        ({"modality": "text", "max_text_bytes": 0}, "max_text_bytes", "positive integer"),
    ],
)
def test_bad_size_limits_name_the_option(feature, key, hint):
    with pytest.raises(ValueError, match=rf"features\[0\]\.{key}.*{hint}"):
        spec_from_dict({**VALID, "features": [{"name": "x", **feature}]})
