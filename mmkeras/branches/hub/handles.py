"""Finding a pretrained encoder: "hub:" arguments, local folders, TF Hub handles and their download cache.

A local folder holding a TF2 SavedModel loads with `tf.saved_model.load` alone;
any other handle (a tfhub.dev / Kaggle URL, a `.tar.gz` URL, `gs://...`) is
resolved by `tensorflow_hub` (the optional extra `pip install "mmkeras[hub]"`),
which downloads it once into `TFHUB_CACHE_DIR`. Offline, a handle that is not
in the cache fails at once with an error naming it and the cache folder.
"""
from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import tensorflow as tf

HUB_PREFIX = "hub:"

INSTALL_HINT = 'pip install "mmkeras[hub]"'

CACHE_ENV = "TFHUB_CACHE_DIR"

# Schemes tensorflow_hub downloads from; anything else must be a local folder.
REMOTE_SCHEMES = ("http", "https", "gs")

# Seconds to wait for the handle's host before calling the hub resolver, which has no timeout of its own.
CONNECT_TIMEOUT_SECONDS = 10.0


def is_hub_encoder(value: Any) -> bool:
    """Whether a branch's `encoder` argument names a pretrained encoder ("hub:<handle-or-path>").

    Branch builders call it to choose between their own layers and a `HubEncoder`.

    Args:
      value: the `encoder` argument (any value; only strings can match).

    Returns:
      True for a string starting with "hub:", else False.

    Example:
      >>> is_hub_encoder("hub:/models/sentence_encoder"), is_hub_encoder(None)
      (True, False)
    """
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def strip_hub_prefix(value: str) -> str:
    """Return the handle or path of a "hub:<handle-or-path>" argument.

    Raises:
      ValueError: if `value` does not start with "hub:" or names nothing.
    """
    if not is_hub_encoder(value) or not value[len(HUB_PREFIX):].strip():
        raise ValueError(
            f"Expected 'hub:<handle-or-path>' (e.g. 'hub:https://tfhub.dev/google/nnlm-en-dim50/2' or "
            f"'hub:/models/my_encoder'), got {value!r}."
        )
    return value[len(HUB_PREFIX):].strip()


def hub_cache_dir() -> str:
    """Where tensorflow_hub caches downloads: `$TFHUB_CACHE_DIR`, else `<tmp>/tfhub_modules` (lost on reboot).

    Used to tell whether a handle is already cached (so no network is needed)
    and to name the cache in error messages.

    Returns:
      The cache folder's path (it need not exist).

    Example:
      >>> hub_cache_dir()  # with TFHUB_CACHE_DIR unset
      '/tmp/tfhub_modules'
    """
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "tfhub_modules")


def is_local_handle(handle: str) -> bool:
    """Whether `handle` is meant as a local folder (not an http(s):// or gs:// URL).

    Decides whether `resolve_handle` loads a folder with TensorFlow alone or
    needs tensorflow_hub; `file://` URLs and `~` paths count as local.

    Args:
      handle: a handle without the "hub:" prefix.

    Returns:
      False if the URL scheme is one of `REMOTE_SCHEMES`, else True.

    Example:
      >>> is_local_handle("/models/sentence_encoder")
      True
      >>> is_local_handle("https://tfhub.dev/google/nnlm-en-dim50/2")
      False
    """
    return urllib.parse.urlparse(handle).scheme not in REMOTE_SCHEMES


def resolve_handle(handle: str) -> str:
    """Turn a handle into the local folder of its SavedModel, downloading it if needed.

    Local folders (absolute, relative or `~` paths, or `file://` URLs) need
    only TensorFlow. URLs need `tensorflow_hub`, which downloads once into
    `TFHUB_CACHE_DIR`; a cached handle never touches the network, and an
    uncached one first checks within `CONNECT_TIMEOUT_SECONDS` that its host
    answers, so being offline is an error rather than a hang.

    Args:
      handle: a SavedModel folder, or a TF Hub / Kaggle / `.tar.gz` / `gs://` handle.

    Returns:
      The SavedModel folder's path.

    Raises:
      FileNotFoundError: for a local path that does not exist.
      ValueError: for a local folder without `saved_model.pb`, or a handle
        tensorflow_hub cannot resolve.
      ImportError: for a URL when tensorflow_hub is not installed.
      ConnectionError: for an uncached URL that cannot be downloaded (offline),
        naming the handle and `TFHUB_CACHE_DIR`.

    Example:
      >>> resolve_handle("/models/sentence_encoder")
      '/models/sentence_encoder'
    """
    if is_local_handle(handle):
        return _local_folder(handle)
    try:
        import tensorflow_hub as hub
    except ImportError as error:
        raise ImportError(
            f"Loading the pretrained encoder {handle!r} needs tensorflow_hub: {INSTALL_HINT} (it adds "
            "tensorflow-hub and tf-keras). Or download the SavedModel yourself and pass its local folder "
            f"as 'hub:/path/to/folder'. ({error})"
        ) from error
    if not _is_cached(handle) and urllib.parse.urlparse(handle).scheme in ("http", "https"):
        _check_reachable(handle)
    try:
        return str(hub.resolve(handle))
    except (OSError, tf.errors.OpError) as error:
        raise ConnectionError(_offline_message(handle, error)) from error
    except Exception as error:
        raise ValueError(
            f"tensorflow_hub could not resolve the encoder handle {handle!r}: {error}. Check the handle; downloads "
            f"go to {CACHE_ENV}={hub_cache_dir()!r}."
        ) from error


def load_saved_model(handle: str):
    """Resolve a handle (see `resolve_handle`) and load its SavedModel with `tf.saved_model.load`.

    The one place encoders and preprocessors are loaded, so local folders and
    TF Hub handles follow the same rules (cache, offline errors).

    Args:
      handle: a SavedModel folder, or a TF Hub / Kaggle / `.tar.gz` / `gs://` handle.

    Returns:
      The object `tf.saved_model.load` returns (its variables, functions and signatures).

    Raises:
      FileNotFoundError, ValueError, ImportError, ConnectionError: see `resolve_handle`.

    Example:
      >>> encoder = load_saved_model("/models/sentence_encoder")
      >>> encoder(tf.constant(["a red ball"])).shape
      TensorShape([1, 50])
    """
    return tf.saved_model.load(resolve_handle(handle))


def stored_handle(handle: str) -> str:
    if is_local_handle(handle) and not handle.startswith("file://"):
        return str(Path(os.path.expandvars(os.path.expanduser(handle))).resolve())
    return handle


def _local_folder(handle: str) -> str:
    path = handle.removeprefix("file://")
    folder = Path(os.path.expandvars(os.path.expanduser(path))).resolve()
    if not folder.exists():
        raise FileNotFoundError(
            f"No SavedModel folder at {str(folder)!r} (from encoder handle {handle!r}). Give the folder that holds "
            "saved_model.pb, or a TF Hub URL such as 'https://tfhub.dev/...' (needs tensorflow_hub)."
        )
    if not (folder / "saved_model.pb").is_file():
        raise ValueError(
            f"{str(folder)!r} (from encoder handle {handle!r}) holds no saved_model.pb; give the folder of a TF2 "
            "SavedModel (e.g. what tf.saved_model.save wrote, or an extracted TF Hub download)."
        )
    return str(folder)


def _is_cached(handle: str) -> bool:
    """Whether tensorflow_hub's compressed-download cache already holds `handle` (its folder is sha1(handle))."""
    folder = Path(hub_cache_dir()) / hashlib.sha1(handle.encode("utf8")).hexdigest()
    return folder.is_dir() and any(folder.iterdir())


def _check_reachable(handle: str) -> None:
    url = urllib.parse.urlparse(handle)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as error:
        raise ConnectionError(_offline_message(handle, error)) from error


def _offline_message(handle: str, error: BaseException) -> str:
    return (
        f"Cannot download the pretrained encoder {handle!r} ({type(error).__name__}: {error}), and it is not in the "
        f"TF Hub cache {CACHE_ENV}={hub_cache_dir()!r}. Run once with network access to fill the cache (and keep "
        f"{CACHE_ENV} pointing at it), or download the SavedModel elsewhere and pass its local folder as "
        "'hub:/path/to/folder'."
    )
