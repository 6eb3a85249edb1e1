"""Local files opened beneath an allowed folder without following a symbolic link, then judged on the descriptor.

A path is resolved once, by the open itself: openat2 with RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS relative to the
allowed folder's descriptor where the kernel has it, else one O_NOFOLLOW open per component from that descriptor.
What was found (a regular file, with one name, its size and identity) is then read from the descriptor with fstat,
and its bytes too: checking a path and opening it afterwards would let a link swapped in between lead anywhere.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import platform
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, BinaryIO

from pipelines.steps.errors import StepError

# (root descriptor, components below it, open flags) -> descriptor; OSError as the kernel said it.
Resolver = Callable[[int, Sequence[str], int], int]

_OPENAT2 = {"x86_64": 437, "aarch64": 437}  # one number on both: syscalls added since 5.x share them
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A component on the way, whatever it is (O_PATH: Linux; elsewhere a link fails the open, and a file is read-only).
_ON_THE_WAY = getattr(os, "O_PATH", os.O_RDONLY | os.O_NONBLOCK) | os.O_NOFOLLOW | os.O_CLOEXEC
# Whatever is there, without following it: O_NONBLOCK so that a FIFO cannot hold the open, O_NOCTTY for a terminal.
_ANYTHING = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = {stat.S_IFDIR: "folder", stat.S_IFLNK: "symbolic link", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket",
          stat.S_IFCHR: "character device", stat.S_IFBLK: "block device", stat.S_IFREG: "regular file"}  # fmt: skip


@dataclass(frozen=True)
class Found:
    """What an open found: its descriptor (the caller closes it), what fstat says of it, and the path asked for."""

    fd: int
    info: os.stat_result
    path: str


def open_path(path: str, roots: Sequence[str] | None, *, where: str, resolver: Resolver | None = None) -> Found:
    """`path` (a file or a folder) opened beneath the longest of `roots` (file:// locations) that holds it, or
    beneath / when `roots` is None; StepError 403 for a path outside them, with '..' or '.', or with a link."""
    root, parts = _beneath(path, roots, where=where)
    resolve = resolver or best_resolver()
    try:
        anchor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the operator's folder, as configured
    except (FileNotFoundError, NotADirectoryError):
        raise StepError(404, f"{where}: no such file or folder (the allowed folder {root} is not there)") from None
    try:
        try:
            fd = resolve(anchor, parts, _ANYTHING)
        except OSError as exc:
            raise _refusal(exc, anchor, root, parts, where) from None
    finally:
        os.close(anchor)
    return Found(fd, os.fstat(fd), path)


def check_file(found: Found, *, where: str) -> None:
    """StepError unless the descriptor is a regular file with one name.

    A second name (a hard link) may be another tenant's file: no path shows where its other name is, and with
    fs.protected_hardlinks off anyone may make one to a file they can see but not read.
    """
    kind = _KINDS.get(stat.S_IFMT(found.info.st_mode), "special file")
    if kind != "regular file":
        raise StepError(400, f"{where}: expected a regular file, found a {kind}")
    if found.info.st_nlink != 1:
        raise StepError(403, f"policy_denied: {where}: expected a file with one name, found {found.info.st_nlink} "
                             "hard links (another name may be outside the allowed folder)")  # fmt: skip


def identity(info: os.stat_result) -> str:
    """The listed file as later opens must find it: the same file (device, inode). Its bytes changing in place
    is the reader's to find, by their size and checksums, as for any store."""
    return f"{info.st_dev}:{info.st_ino}"


def entries(folder: int) -> Iterator[tuple[str, os.stat_result]]:
    """Everything under the open folder that is not a folder, in path order, as (relative name, lstat), one
    folder's names in memory at a time. Folders are entered through descriptors opened without following a link;
    a link, a FIFO or a device is listed, for its open to refuse by name; a folder swapped for a link is too."""
    for name in sorted(os.listdir(folder)):
        try:
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since the folder was read
        if not stat.S_ISDIR(info.st_mode):
            yield name, info
            continue
        try:
            inner = os.open(name, _FOLDER, dir_fd=folder)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            yield name, info  # swapped since it was looked at: its own open refuses what it has become
            continue
        try:
            for relative, found in entries(inner):
                yield f"{name}/{relative}", found
        finally:
            os.close(inner)


def reader(found: Found, offset: int = 0) -> BinaryIO:
    """The descriptor's bytes from `offset` up to the size fstat gave at open (a file that grows since sends no
    more than was counted against the ceilings); closing the stream closes the descriptor."""
    return io.BufferedReader(_Descriptor(found.fd, offset, found.info.st_size))


def resolve_openat2(root: int, parts: Sequence[str], flags: int) -> int:
    """One openat2(2): the kernel refuses any link on the way (ELOOP) and any step out of `root` (EXDEV)."""
    how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    call = _libc().syscall
    fd = int(call(_OPENAT2[platform.machine()], root, os.fsencode("/".join(parts) or "."), ctypes.byref(how),
                  ctypes.sizeof(how)))  # fmt: skip
    if fd < 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return fd


def resolve_walking(root: int, parts: Sequence[str], flags: int) -> int:
    """One open per component, each relative to the folder opened before it and with O_NOFOLLOW: a link anywhere
    fails with ELOOP; '..' never reaches here (`_beneath` refuses it). A folder on the way is opened with O_PATH
    and judged by fstat, as O_DIRECTORY would call a link "not a directory"."""
    current = root
    try:
        for part in parts[:-1]:
            inner = os.open(part, _ON_THE_WAY, dir_fd=current)
            if current != root:
                os.close(current)
            current = inner
            mode = os.fstat(inner).st_mode
            if not stat.S_ISDIR(mode):
                number = errno.ELOOP if stat.S_ISLNK(mode) else errno.ENOTDIR
                raise OSError(number, os.strerror(number))
        return os.open(parts[-1] if parts else ".", flags | os.O_NOFOLLOW, dir_fd=current)
    finally:
        if current != root:
            os.close(current)


@cache
def best_resolver() -> Resolver:
    """openat2 where this machine has it (Linux 5.6+, not blocked by a seccomp profile), else the walk."""
    if platform.machine() not in _OPENAT2:
        return resolve_walking
    try:
        root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.close(resolve_openat2(root, (), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        finally:
            os.close(root)
    except (OSError, AttributeError):  # ENOSYS, EPERM from seccomp; no libc syscall()
        return resolve_walking
    return resolve_openat2


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


@cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _beneath(path: str, roots: Sequence[str] | None, *, where: str) -> tuple[str, tuple[str, ...]]:
    """The allowed folder holding `path` (the longest) and the components below it."""
    if not path.startswith("/"):
        raise StepError(400, f"{where}: expected an absolute path, found {path!r}")
    folders = ["/"] if roots is None else [_folder(root) for root in roots]
    holding = [f for f in folders if f == "/" or path.rstrip("/") == f or path.startswith(f + "/")]
    if not holding:
        allowed = ", ".join(roots or ()) or "none"
        raise StepError(403, f"policy_denied: {where}: expected a path under the allowed folders ({allowed}), "
                             f"found {path}")  # fmt: skip
    root = max(holding, key=len)
    below = path[len(root) :] if root != "/" else path
    below = below.removeprefix("/").removesuffix("/")  # the root's separator, a folder's trailing one: no more
    parts = tuple(below.split("/")) if below else ()
    if any(part in ("", ".", "..") for part in parts):
        raise StepError(403, f"policy_denied: {where}: expected a path without '..', '.' or empty segments, "
                             f"found {path}")  # fmt: skip
    return root, parts


def _folder(root: str) -> str:
    folder = root.removeprefix("file://")
    return folder.rstrip("/") or "/"


def _refusal(exc: OSError, anchor: int, root: str, parts: Sequence[str], where: str) -> Exception:
    if exc.errno in (errno.ELOOP, errno.EXDEV):  # a link on the way (EXDEV: one that would have led out)
        expected = f"policy_denied: {where}: expected a path without symbolic links below {root}"
        link = _first_link(anchor, parts)
        if link is None:  # no longer there: swapped back since the open met it
            return StepError(403, f"{expected}, found a symbolic link swapped in while it was opened")
        return StepError(403, f"{expected}, found a symbolic link at {os.path.join(root, *link)}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return StepError(404, f"{where}: no such file or folder")
    return exc


def _first_link(anchor: int, parts: Sequence[str]) -> tuple[str, ...] | None:
    """Which component is a link, for the message: shortest first, so no link is passed through to look."""
    for end in range(1, len(parts) + 1):
        try:
            info = os.stat("/".join(parts[:end]), dir_fd=anchor, follow_symlinks=False)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return tuple(parts[:end])
    return None


class _Descriptor(io.RawIOBase):
    """pread from an owned descriptor, between `position` and `end`: no shared file offset to disturb."""

    def __init__(self, fd: int, position: int, end: int) -> None:
        self._fd, self._position, self._end = fd, position, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._end - self._position)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
