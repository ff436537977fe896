"""Finding a KerasHub preset: "keras_hub:" arguments, local preset folders, preset names and their download cache.

A local folder written by `save_to_preset` (or a downloaded preset) needs only
`keras-hub`. A built-in preset name ("bert_tiny_en_uncased",
"clip_vit_base_patch32") or a `kaggle://` handle is downloaded once by
`kagglehub` into `$KAGGLEHUB_CACHE` (default `~/.cache/kagglehub`); a cached
preset loads from its cache folder without touching the network, and an
uncached one first checks within `CONNECT_TIMEOUT_SECONDS` that its host
answers, so being offline is an error rather than a hang.
"""
from __future__ import annotations

import importlib
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

KERAS_HUB_PREFIX = "keras_hub:"

INSTALL_HINT = 'pip install "mmkeras[keras-hub]"'

CACHE_ENV = "KAGGLEHUB_CACHE"

# The file every KerasHub preset folder holds (the backbone's config).
PRESET_CONFIG = "config.json"

# Hosts KerasHub downloads presets from, by handle scheme (built-in names are Kaggle handles).
DOWNLOAD_HOSTS = {"kaggle": "api.kaggle.com", "hf": "huggingface.co", "modelscope": "www.modelscope.cn"}

# Seconds to wait for the preset's host before calling KerasHub, whose downloads have no timeout of their own.
CONNECT_TIMEOUT_SECONDS = 10.0


def is_keras_hub_encoder(value: Any) -> bool:
    """Whether a branch's `encoder` argument names a KerasHub preset ("keras_hub:<preset-or-folder>").

    Branch builders call it to choose between their own layers and a `KerasHubEncoder`.

    Args:
      value: the `encoder` argument (any value; only strings can match).

    Returns:
      True for a string starting with "keras_hub:", else False.

    Example:
      >>> is_keras_hub_encoder("keras_hub:bert_tiny_en_uncased"), is_keras_hub_encoder("hub:/models/x")
      (True, False)
    """
    return isinstance(value, str) and value.startswith(KERAS_HUB_PREFIX)


def strip_keras_hub_prefix(value: str) -> str:
    """Return the preset name, handle or folder of a "keras_hub:<preset-or-folder>" argument.

    Raises:
      ValueError: if `value` does not start with "keras_hub:" or names nothing.
    """
    if not is_keras_hub_encoder(value) or not value[len(KERAS_HUB_PREFIX):].strip():
        raise ValueError(
            "Expected 'keras_hub:<preset name or local preset folder>' (e.g. 'keras_hub:bert_tiny_en_uncased' or "
            f"'keras_hub:/models/my_preset'), got {value!r}."
        )
    return value[len(KERAS_HUB_PREFIX):].strip()


def import_keras_hub():
    """Import and return the `keras_hub` module, or say how to install it.

    Raises:
      ImportError: naming `pip install "mmkeras[keras-hub]"` when keras-hub is missing.
    """
    try:
        return importlib.import_module("keras_hub")
    except ImportError as error:
        raise ImportError(
            f"KerasHub encoders ('keras_hub:...') need keras-hub and tensorflow-text: {INSTALL_HINT}. ({error})"
        ) from error


def keras_hub_cache_dir() -> str:
    """Where KerasHub's downloads (through kagglehub) are cached: `$KAGGLEHUB_CACHE`, else `~/.cache/kagglehub`.

    Returns:
      The cache folder's path (it need not exist).

    Example:
      >>> keras_hub_cache_dir()  # with KAGGLEHUB_CACHE unset
      '/root/.cache/kagglehub'
    """
    return os.environ.get(CACHE_ENV) or os.path.join(Path.home(), ".cache", "kagglehub")


def is_local_preset(preset: str) -> bool:
    """Whether `preset` is meant as a local folder: a path (absolute, relative, `~`) or an existing folder.

    Args:
      preset: a preset without the "keras_hub:" prefix.

    Returns:
      False for a `scheme://` handle or a bare name that is not an existing folder, else True.

    Example:
      >>> is_local_preset("/models/bert"), is_local_preset("bert_tiny_en_uncased")
      (True, False)
    """
    if "://" in preset:
        return preset.startswith("file://")
    return preset.startswith((".", "~", "/", "$")) or os.sep in preset or Path(preset).is_dir()


def resolve_preset(preset: str) -> str:
    """Turn a preset into what `from_preset` should load, so that nothing waits on the network for long.

    Local folders are checked and returned absolute. A built-in preset name or
    a `kaggle://` handle that kagglehub has cached is returned as its cache
    folder (loaded like a local folder, offline). Anything else is returned
    as it is once its host answered within `CONNECT_TIMEOUT_SECONDS`.

    Args:
      preset: a preset folder, a built-in preset name, or a `kaggle://` / `hf://` handle.

    Returns:
      A local folder, or the preset itself when it is to be downloaded.

    Raises:
      FileNotFoundError: for a local path that does not exist, or holds no `config.json`.
      ValueError: for a bare name that is neither a built-in preset nor a folder.
      ImportError: when keras-hub is not installed.
      ConnectionError: for an uncached preset whose host does not answer
        (offline), naming the preset, `KAGGLEHUB_CACHE` and the local-folder option.

    Example:
      >>> resolve_preset("./tiny_bert")
      '/home/me/tiny_bert'
    """
    if is_local_preset(preset):
        return _local_folder(preset)
    import_keras_hub()
    builtin = _builtin_presets()
    handle = builtin[preset]["kaggle_handle"] if preset in builtin else preset
    if "://" not in handle:
        raise ValueError(
            f"{preset!r} is neither a KerasHub preset name nor a local preset folder. Give a built-in name "
            "(keras_hub.models.Backbone.presets lists them, e.g. 'bert_tiny_en_uncased'), a 'kaggle://' or 'hf://' "
            "handle, or the folder save_to_preset wrote (e.g. 'keras_hub:/models/my_preset')."
        )
    cached = _kaggle_cache_folder(handle)
    if cached is not None:
        return cached
    _check_reachable(preset, handle)
    return handle


def stored_preset(preset: str) -> str:
    """The preset as a layer records it: local folders absolute, so that a `.keras` file reloads from anywhere."""
    if is_local_preset(preset):
        return str(_expand(preset))
    return preset


def _expand(preset: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(preset.removeprefix("file://")))).resolve()


def _local_folder(preset: str) -> str:
    folder = _expand(preset)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"No KerasHub preset folder at {str(folder)!r} (from preset {preset!r}). Give the folder that "
            "save_to_preset wrote (it holds config.json), or a preset name such as 'bert_tiny_en_uncased'."
        )
    if not (folder / PRESET_CONFIG).is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} (from preset {preset!r}) holds no {PRESET_CONFIG}; give a folder written by "
            "`backbone.save_to_preset(folder)` (and the tokenizer's or image converter's save_to_preset)."
        )
    return str(folder)


def _builtin_presets() -> dict:
    # KerasHub has no public table of every preset; this one is what `from_preset` itself reads.
    preset_utils = importlib.import_module("keras_hub.src.utils.preset_utils")
    return preset_utils.BUILTIN_PRESETS


def _kaggle_cache_folder(handle: str) -> str | None:
    """The kagglehub cache folder of a versioned `kaggle://owner/model/framework/variation/version` handle, if it holds the preset."""
    scheme, _, path = handle.partition("://")
    parts = path.strip("/").split("/")
    if scheme != "kaggle" or len(parts) != 5:
        return None
    folder = Path(keras_hub_cache_dir(), "models", *parts)
    return str(folder) if (folder / PRESET_CONFIG).is_file() else None


def _check_reachable(preset: str, handle: str) -> None:
    scheme = handle.partition("://")[0]
    host = DOWNLOAD_HOSTS.get(scheme) or urllib.parse.urlparse(handle).hostname
    if host is None:
        return
    try:
        with socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as error:
        raise ConnectionError(
            f"Cannot download the KerasHub preset {preset!r} ({type(error).__name__} reaching {host}: {error}), and "
            f"it is not in the KerasHub download cache {CACHE_ENV}={keras_hub_cache_dir()!r}. Run once with network "
            f"access to fill the cache (and keep {CACHE_ENV} pointing at it), or save the preset to a folder "
            "elsewhere (`save_to_preset`) and pass it as 'keras_hub:/path/to/folder'."
        ) from error
