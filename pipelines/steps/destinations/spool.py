"""A destination's private spool: objects written to a temporary folder until one commit sends them all (the
Hugging Face and Kaggle destinations), and what both make of their service's status."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Protocol

from pipelines.steps.checksums import HashingReader
from pipelines.steps.objects import CHUNK


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class Spool:
    """The folder, made on first use; `discard` removes it, and so does its owner going (a crash before close)."""

    def __init__(self, prefix: str, temp_root: str | None) -> None:
        self._prefix, self._temp_root = prefix, temp_root
        self._folder: Path | None = None
        self._cleanup: weakref.finalize[Any, Any] | None = None

    def folder(self) -> Path:
        if self._folder is None:
            # mkdtemp makes the folder 0700, owned by this process's user; files in it are created 0600.
            self._folder = Path(tempfile.mkdtemp(prefix=self._prefix, dir=self._temp_root))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        return self._folder

    def discard(self) -> None:
        if self._cleanup is not None:
            self._cleanup()
        self._folder, self._cleanup = None, None


def write(stream: HashingReader, target: Path, *digests: _Digest) -> None:
    """Copy the stream into a new file `target` (never an existing one), feeding each digest what is written."""
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(descriptor, "wb") as spool:
        while chunk := stream.read(CHUNK):
            spool.write(chunk)
            for digest in digests:
                digest.update(chunk)


def upstream_status(upstream: int) -> int:
    """The service's 4xx (credentials, permissions, a missing repository or dataset) stays the step's status;
    anything else is a 502."""
    return upstream if 400 <= upstream < 500 else 502
