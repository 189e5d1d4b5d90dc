"""Publishing outputs atomically: one file, or a whole directory of files, and a run lock.

Every command that writes something a user or another program reads goes through here, so
there is one rule for what a reader can see: the old output or the new one, never a part.

* **A file** (:func:`write_atomic`, :func:`write_text_atomic`): written to a hidden temporary
  sibling (``.NAME.<random>.tmp``, same directory so the rename stays on one file system),
  then moved over the target with ``os.replace``.
* **A new directory, never modified after** (:func:`new_directory`, a model artifact): filled
  in a hidden temporary sibling (``.NAME.tmp-<random>``), then moved into place with one
  ``rename(2)``; on any error the sibling is removed and ``NAME`` is untouched.
* **A directory of files** (:class:`VersionedDir`): ``DIR`` is a symbolic link to a complete,
  never-modified version directory in a hidden sibling store, ``.NAME.retain/``::

      .NAME.retain/lock                 flock'ed by the run publishing to DIR (holds its pid)
      .NAME.retain/next.link            the new link, made here and renamed over NAME
      .NAME.retain/versions/<id>/       one published version: the files and _manifest.json
      .NAME.retain/<anything else>      the caller's private work area (e.g. staging)
      NAME -> .NAME.retain/versions/<id>

  A run builds the next version beside the current one, then switches ``DIR`` to it with one
  ``rename(2)`` of a new link over the old one, so ``pandas.read_parquet(DIR)`` or
  ``pyarrow.dataset.dataset(DIR)`` opened before the switch list the old version and after
  it the new one. The store is a dot-directory, which both readers skip, so a reader of the
  parent directory never sees versions either. The version it replaced is kept until the
  next publish (a reader that listed it may still be opening its files); others are removed,
  but only the files listed in their ``_manifest.json`` with the recorded sha256, so a file
  someone else put there is never deleted (the directory is then left in place).

  A reader that lists ``DIR`` and opens the files one by one through ``DIR/...`` paths could
  still straddle a switch that happens in between; :func:`pinned` resolves the link once so
  every file comes from one version (``serving.batch.publish.read_scores`` reads that way).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from features.errors import UserError

__all__ = [
    "MANIFEST_NAME",
    "OutputBusyError",
    "OutputRefusedError",
    "VersionedDir",
    "new_directory",
    "pinned",
    "sha256_file",
    "write_atomic",
    "write_text_atomic",
]

MANIFEST_NAME = "_manifest.json"
"""In each version: every file retain wrote there with its sha256 (``_`` hides it from readers)."""
STORE_SUFFIX = ".retain"
VERSIONS_DIR = "versions"
LOCK_NAME = "lock"
NEXT_LINK_NAME = "next.link"


class OutputBusyError(UserError, RuntimeError):
    """Another live process holds the output's lock; the message names its pid."""


class OutputRefusedError(UserError, RuntimeError):
    """The output path holds something retain did not write; it is left untouched."""


# ---- single files --------------------------------------------------------------------------


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write via ``write(tmp_path)`` to a temp file next to ``path``, then ``os.replace``.

    The temp file is created here (not by ``mkstemp``) so the final file gets the usual umask
    permissions; on any error it is removed and the old ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    tmp.touch(exist_ok=False)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_atomic` of UTF-8 text."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def new_directory(target: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``target`` to fill; publish it as ``target`` after.

    When the block ends without error the sibling is renamed to ``target`` (which may exist
    only as an empty directory; the caller checks that first and says why in its own
    words), so a reader sees all of it or nothing; on any error the sibling is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- versioned directories ---------------------------------------------------------------


def pinned(directory: str | Path) -> Path:
    """The version directory ``directory`` points to now (itself if it is not a link).

    Reading every file from the returned path gives one version even if a publish switches
    ``directory`` meanwhile (the previous version outlives one more publish).
    """
    return Path(os.path.realpath(directory))


class VersionedDir:
    """``path`` published as a link to complete, immutable versions; see the module doc.

    Use as a context manager: entering takes the lock (refusing a second live run with a
    message naming its pid) and checks that ``path`` is retain's to replace; leaving releases
    the lock (so does the process dying: it is an ``flock``).

    ``adopt(directory)`` recognises a plain directory an earlier retain wrote (before outputs
    were versioned): it returns that directory's files with their sha256 when every file in
    it is one retain wrote, else None. Such a directory becomes the first version, moved in
    whole by one rename (a reader then briefly finds no ``path``, never a mix); any other
    plain directory holding files is refused and left untouched.
    """

    def __init__(
        self, path: str | Path, adopt: Callable[[Path], dict[str, str] | None] | None = None
    ) -> None:
        self.path = Path(os.path.abspath(path))
        self.store = self.path.parent / f".{self.path.name}{STORE_SUFFIX}"
        self.versions = self.store / VERSIONS_DIR
        self._adopt = adopt or (lambda directory: None)
        self._lock_fd: int | None = None
        self.warnings: list[str] = []

    # -- lock --------------------------------------------------------------------------------

    def __enter__(self) -> VersionedDir:
        self.check_target()  # before creating the store: a refused path gets nothing beside it
        self.versions.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.store / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputBusyError(
                f"{self.path} is being written by another run (pid {holder}, lock "
                f"{self.store / LOCK_NAME}); wait for it to finish or choose another output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_fd = fd
        try:
            adopted = self.check_target()  # again, now that no other run can change it
            if adopted is not None:
                self._adopt_plain_dir(adopted)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._lock_fd = None

    # -- what is there -----------------------------------------------------------------------

    def current(self) -> Path | None:
        """The version ``path`` links to, or None when nothing is published yet."""
        if not self.path.is_symlink():
            return None
        target = (self.path.parent / os.readlink(self.path)).resolve()
        return target if target.parent == self.versions.resolve() else None

    def check_target(self) -> dict[str, str] | None:
        """Refuse a ``path`` that holds anything retain did not publish (it is not touched).

        Returns the files of a plain directory an earlier retain wrote (see ``adopt``).
        """
        if self.path.is_symlink():
            if self.current() is None:
                raise OutputRefusedError(
                    f"{self.path} is a link to {os.readlink(self.path)}, not to an output "
                    f"retain published (in {self.store}); remove it or choose another output"
                )
            return None
        if not self.path.exists():
            return None
        if not self.path.is_dir():
            raise OutputRefusedError(f"{self.path} exists and is not a directory")
        found = sorted(p.name for p in self.path.iterdir())
        adopted = self._adopt(self.path) if found else None
        if adopted is not None:
            return adopted
        if found:
            shown = ", ".join(found[:5]) + (
                f", ... ({len(found)} in all)" if len(found) > 5 else ""
            )
            raise OutputRefusedError(
                f"{self.path} is a directory holding files retain did not publish ({shown}); "
                "retain publishes an output as a link to a versioned directory and never "
                "deletes what it did not write: move them away or choose another output"
            )
        return None

    def _adopt_plain_dir(self, files: dict[str, str]) -> None:
        """Make an earlier retain's plain output directory the first version (one rename)."""
        text = json.dumps({"files": dict(sorted(files.items()))}, indent=2) + "\n"
        write_text_atomic(self.path / MANIFEST_NAME, text)
        version = self.versions / self._next_version_name()
        link = self.store / NEXT_LINK_NAME
        link.unlink(missing_ok=True)
        os.symlink(os.path.relpath(version, self.path.parent), link)
        os.rename(self.path, version)
        os.replace(link, self.path)
        _fsync_dir(self.path.parent)

    # -- publish -----------------------------------------------------------------------------

    def publish(
        self,
        files: Mapping[str, Path],
        extra: Mapping[str, str],
        *,
        digests: Mapping[str, str] | None = None,
        before_switch: Callable[[str], None] | None = None,
    ) -> Path:
        """Make ``files`` (name -> existing file) and ``extra`` (name -> text) the new version.

        Files are hard-linked (copied across file systems), so the sources stay valid, e.g.
        for a resumable staging area; ``digests`` (name -> sha256) saves reading files whose
        hash the caller already has. ``before_switch(step)`` is called between the steps (a
        test hook): ``writing`` (first file in), ``version-written``, ``link-made`` (the new
        link exists under a temporary name), ``switched``. Returns the new version directory.
        """
        if self._lock_fd is None:
            raise RuntimeError("VersionedDir.publish outside its `with` block (no lock held)")
        hook = before_switch or (lambda step: None)
        previous = self.current()
        version = self.versions / self._next_version_name()
        version.mkdir()
        # The manifest goes first, so even a version killed half-way is removable file by file.
        known = digests or {}
        recorded = {n: known.get(n) or sha256_file(source) for n, source in files.items()}
        recorded.update(
            {n: hashlib.sha256(t.encode("utf-8")).hexdigest() for n, t in extra.items()}
        )
        manifest = json.dumps({"files": dict(sorted(recorded.items()))}, indent=2) + "\n"
        (version / MANIFEST_NAME).write_text(manifest, encoding="utf-8")
        for number, (name, source) in enumerate(sorted(files.items())):
            _link_or_copy(source, version / name)
            if number == 0:
                hook("writing")
        for name, text in sorted(extra.items()):
            (version / name).write_text(text, encoding="utf-8")
        _fsync_dir(version)
        hook("version-written")
        link = self.store / NEXT_LINK_NAME  # moved, not copied, to its place: same file system
        link.unlink(missing_ok=True)  # left by a run killed here
        os.symlink(os.path.relpath(version, self.path.parent), link)
        hook("link-made")
        if self.path.is_dir() and not self.path.is_symlink():
            self.path.rmdir()  # an empty directory (check_target refused any other)
        os.replace(link, self.path)
        _fsync_dir(self.path.parent)
        hook("switched")
        self._prune(keep={version.name} | ({previous.name} if previous is not None else set()))
        return version

    def _next_version_name(self) -> str:
        numbers = [int(p.name) for p in self.versions.iterdir() if p.name.isdigit()]
        return f"{max(numbers, default=0) + 1:06d}"

    def _prune(self, keep: set[str]) -> None:
        """Remove every version but ``keep`` (the new one and the one it replaced; a reader
        may still be opening the latter's files), file by file from their manifests."""
        for version in sorted(self.versions.iterdir()):
            if version.name.isdigit() and version.name not in keep:
                self._remove_version(version)

    def _remove_version(self, version: Path) -> None:
        manifest_path = version / MANIFEST_NAME
        try:
            recorded = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None
        if not isinstance(recorded, dict):
            if any(version.iterdir()):
                self.warnings.append(f"kept {version}: it has no readable {MANIFEST_NAME}")
                return
            recorded = {}
        for name, digest in recorded.items():
            path = version / name
            if path.is_file() and not path.is_symlink() and sha256_file(path) == digest:
                path.unlink()
        others = sorted(p.name for p in version.iterdir() if p.name != MANIFEST_NAME)
        if others:
            manifest_path.write_text(json.dumps({"files": {}}) + "\n", encoding="utf-8")
            self.warnings.append(
                f"kept old version {version}: it holds files retain did not write or that "
                f"changed since ({', '.join(others[:5])})"
            )
            return
        manifest_path.unlink(missing_ok=True)
        version.rmdir()


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:  # another file system (or no hard links): copy
        shutil.copyfile(source, dest)


def _fsync_dir(path: Path) -> None:
    """Make the directory's entries (new files, a rename) durable before moving on."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
