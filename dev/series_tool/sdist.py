"""Download pinned sdists into a cache, verify them, and unpack them into place."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from series_tool.config import Pin
from series_tool.errors import SeriesError

INDEX = os.environ.get("SERIES_INDEX_URL", "https://pypi.org/simple")
# Files in an sdist that are made by the build and are not in upstream's git tree.
SDIST_ONLY = {"PKG-INFO"}


def cache_dir(root: Path) -> Path:
    return Path(os.environ.get("SERIES_CACHE", root / ".cache" / "sdists"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(pin: Pin, cache: Path) -> Path:
    """Return the verified sdist for ``pin``, downloading it when it is not cached.

    A cached file that does not match the pin is downloaded again; a download that
    does not match is an error and is not kept.
    """
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / pin.filename
    if target.exists() and _sha256(target) == pin.sha256:
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=pin.filename + ".", suffix=".part", dir=cache)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _open(pin.url) as resp:
            shutil.copyfileobj(resp, out)
        actual = _sha256(tmp)
        if actual != pin.sha256:
            raise SeriesError(
                f"checksum mismatch for {pin.dist} {pin.version} ({pin.url}):\n"
                f"  pinned   sha256 {pin.sha256}\n  download sha256 {actual}\n"
                "Nothing was unpacked. Fix the pin in pyproject.toml (or the download source)."
            )
        tmp.replace(target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _open(url: str):
    try:
        return urllib.request.urlopen(url, timeout=120)
    except (urllib.error.URLError, OSError) as exc:
        raise SeriesError(f"cannot download {url}: {exc}") from None


def verify(path: Path, pin: Pin) -> None:
    actual = _sha256(path)
    if actual != pin.sha256:
        raise SeriesError(
            f"checksum mismatch for {path.name}: pinned {pin.sha256}, file {actual}. Nothing was unpacked."
        )


def unpack(sdist: Path, pin: Pin, dest: Path) -> None:
    """Unpack ``sdist`` (already verified) so that its top folder's content lands in ``dest``."""
    verify(sdist, pin)
    prefix = f"{pin.dist.replace('-', '_')}-{pin.version}/"
    with tarfile.open(sdist, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith(prefix):
                raise SeriesError(f"{sdist.name}: unexpected member {member.name!r} outside {prefix}")
            rel = member.name[len(prefix) :]
            if not rel or rel in SDIST_ONLY:
                continue
            member.name = rel
            members.append(member)
        dest.mkdir(parents=True, exist_ok=True)
        tar.extractall(dest, members=members, filter="data")


def lookup(dist: str, version: str) -> Pin:
    """Ask the index for the sdist of ``dist`` ``version`` (used when moving a pin)."""
    url = f"{INDEX.rstrip('/')}/{dist}/"
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            data = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise SeriesError(f"cannot read the index page {url}: {exc}") from None
    wanted = f"{dist.replace('-', '_')}-{version}.tar.gz"
    for entry in data.get("files", []):
        if entry.get("filename") == wanted:
            return Pin(dist=dist, version=version, sha256=entry["hashes"]["sha256"], url=entry["url"])
    raise SeriesError(f"{dist} {version} has no sdist named {wanted} on {INDEX}")
