"""Download and checksum helpers shared by the dataset builders.

Builders that need third-party files (e.g. FSDD for `avmnist`) read them from a
local folder when there is one and otherwise download a pinned archive. Either
way the files are checked against a SHA-256 "tree digest" recorded in the
builder, so a dataset is always built from exactly the same source files.

The tree digest is computed over the extracted files, not over the archive:
it is the SHA-256 of the lines `"<sha256 of the file> <relative path>\\n"`,
one per matching file, sorted by path. It does not depend on the archive's
compression or timestamps, and can be checked on a folder that was copied by
hand.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

CHUNK_BYTES = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(folder: str | os.PathLike, pattern: str = "*") -> str:
    """Return the tree digest of the files in `folder` that match `pattern`.

    Use it to pin a folder of data files: the digest changes if a file is
    added, removed, renamed or altered.

    Args:
      folder: the folder to digest (not recursive).
      pattern: a glob for the files that count (e.g. "*.wav").

    Returns:
      The hex SHA-256 of the sorted `"<file sha256> <name>\\n"` lines.

    Raises:
      FileNotFoundError: if `folder` is not a directory.

    Example:
      >>> tree_sha256("/data/fsdd/recordings", "*.wav")  # doctest: +SKIP
      '3f5c...'
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Cannot compute a checksum of {folder}: it is not a folder.")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.glob(pattern) if p.is_file()):
        digest.update(f"{file_sha256(path)} {path.name}\n".encode())
    return digest.hexdigest()


def verify_tree(folder: str | os.PathLike, expected_sha256: str, *, pattern: str = "*", what: str = "data") -> None:
    """Check that the files in `folder` have the expected tree digest.

    Args:
      folder: the folder to check.
      expected_sha256: the digest recorded when the data was pinned.
      pattern: a glob for the files that count.
      what: a name for the data, used in the error message.

    Raises:
      FileNotFoundError: if `folder` is not a directory.
      ValueError: if the digest differs; the message names the folder, both
        digests and how to fix it.
    """
    folder = Path(folder)
    actual = tree_sha256(folder, pattern)
    if actual != expected_sha256:
        count = sum(1 for p in folder.glob(pattern) if p.is_file())
        raise ValueError(
            f"Checksum mismatch for {what} in {folder} ({count} files matching {pattern!r}): "
            f"expected tree SHA-256 {expected_sha256}, got {actual}. The folder is incomplete, altered or "
            f"another version; delete it and let mmkeras download it again, or point to an intact copy."
        )


def download_archive(
    url: str,
    destination: str | os.PathLike,
    *,
    member_prefix: str,
    expected_sha256: str,
    pattern: str = "*",
    what: str = "data",
    timeout: float = 60.0,
) -> Path:
    """Download a tar archive, extract one folder of it, verify it and move it into place.

    The archive is streamed to a temporary file next to `destination`, the
    members under `member_prefix` are extracted (regular files only, with the
    prefix removed) into a temporary folder, the folder's tree digest is
    checked, and only then is it renamed to `destination`. An interrupted or
    corrupt download therefore never leaves a folder that looks complete.

    Args:
      url: the archive's URL (`.tar`, `.tar.gz`, ...; `file://` works too).
      destination: the folder to create; it must not exist yet.
      member_prefix: the archive folder to extract, e.g. "repo-<commit>/recordings".
      expected_sha256: the tree digest of the extracted files (see `tree_sha256`).
      pattern: the glob the digest is computed over.
      what: a name for the data, used in messages.
      timeout: seconds to wait for the server before giving up.

    Returns:
      `destination`.

    Raises:
      OSError: if the download fails (no network, HTTP error); `urllib.error.URLError`
        is a subclass.
      FileExistsError: if `destination` already exists.
      ValueError: if the archive holds nothing under `member_prefix`, or the
        extracted files fail the checksum.

    Example:
      >>> download_archive(URL, Path("~/data/fsdd/recordings").expanduser(),  # doctest: +SKIP
      ...                  member_prefix="free-spoken-digit-dataset-26eb9aa.../recordings",
      ...                  expected_sha256=FSDD_RECORDINGS_SHA256, pattern="*.wav")
    """
    destination = Path(destination)
    if destination.exists():
        raise FileExistsError(f"Refusing to download {what} into {destination}: it already exists.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    prefix = PurePosixPath(member_prefix.strip("/")).parts
    with tempfile.TemporaryDirectory(prefix=f".{destination.name}-", dir=destination.parent) as scratch:
        archive = Path(scratch) / "archive"
        with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as stream:
            shutil.copyfileobj(response, stream, CHUNK_BYTES)
        staging = Path(scratch) / "extracted"
        staging.mkdir()
        extracted = 0
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                relative = parts[len(prefix):]
                # Only plain files strictly below the prefix; no links, no "..": nothing can escape `staging`.
                if not member.isfile() or parts[: len(prefix)] != prefix or not relative or ".." in relative:
                    continue
                target = staging.joinpath(*relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, CHUNK_BYTES)
                extracted += 1
        if not extracted:
            raise ValueError(f"The archive at {url} holds no files under {member_prefix!r}; cannot get {what}.")
        verify_tree(staging, expected_sha256, pattern=pattern, what=f"{what} downloaded from {url}")
        os.replace(staging, destination)
    return destination
