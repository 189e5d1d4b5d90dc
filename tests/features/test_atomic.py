"""``features.atomic``: atomic files, versioned directories switched by one rename, the lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from features.atomic import (
    MANIFEST_NAME,
    OutputBusyError,
    OutputRefusedError,
    VersionedDir,
    new_directory,
    pinned,
    write_text_atomic,
)


def _part(directory: Path, name: str, values: list[int]) -> Path:
    path = directory / name
    pd.DataFrame({"x": values}).to_parquet(path)
    return path


def test_publish_switches_the_link_and_readers_see_one_version(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    out = tmp_path / "out"
    out.mkdir()  # an empty directory is replaced by the link
    with VersionedDir(out) as target:
        first = target.publish({"part-0.parquet": _part(staged, "a.parquet", [1, 2])}, {})
    assert out.is_symlink() and pinned(out) == first
    assert os.readlink(out) == ".out.retain/versions/000001"  # relative: the tree can move
    with VersionedDir(out) as target:
        second = target.publish(
            {
                "part-0.parquet": _part(staged, "b.parquet", [3]),
                "part-1.parquet": staged / "b.parquet",
            },
            {"_SUCCESS": "run\n"},
        )
    assert pd.read_parquet(out)["x"].tolist() == [3, 3]  # a plain reader, through the link
    manifest = json.loads((second / MANIFEST_NAME).read_text())
    assert sorted(manifest["files"]) == ["_SUCCESS", "part-0.parquet", "part-1.parquet"]
    assert first.is_dir()  # the replaced version outlives one publish, for late readers
    with VersionedDir(out) as target:
        target.publish({}, {"_SUCCESS": "empty\n"})
    assert not first.exists()
    assert (staged / "a.parquet").is_file()  # sources stay (hard links, not moves)


def test_a_second_holder_is_refused_with_the_pid(tmp_path: Path) -> None:
    with VersionedDir(tmp_path / "out"), pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
        VersionedDir(tmp_path / "out").__enter__()
    with VersionedDir(tmp_path / "out"):  # released on exit
        pass


@pytest.mark.parametrize("kind", ["file", "foreign link", "full directory"])
def test_what_retain_did_not_write_is_refused_untouched(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("mine")
    elif kind == "foreign link":
        (tmp_path / "elsewhere").mkdir()
        out.symlink_to("elsewhere")
    else:
        out.mkdir()
        write_text_atomic(out / "data.csv", "a,b\n")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(OutputRefusedError, match=str(out)):
        VersionedDir(out).__enter__()
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing created or removed


def test_publish_needs_the_lock(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no lock held"):
        VersionedDir(tmp_path / "out").publish({}, {"_SUCCESS": ""})


def test_new_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out" / "artifact"
    with pytest.raises(RuntimeError, match="half-way"), new_directory(target) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not target.exists()
        raise RuntimeError("half-way")
    assert not target.exists() and list(target.parent.iterdir()) == []  # no sibling left
    with new_directory(target) as tmp:
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (target / "a.txt").read_text() == "a" and (target / "sub" / "b.txt").read_text() == "b"
    assert [p.name for p in target.parent.iterdir()] == ["artifact"]
