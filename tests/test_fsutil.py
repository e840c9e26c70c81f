"""common.fsutil and common.filetxn: permissions, the file-set transaction, output-location checks."""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from pathlib import Path

import pytest

from imgfeat_cli.common import filetxn, fsutil, paths
from imgfeat_cli.common.errors import ImgfeatError, UsageError

NAMES = ("train.txt", "gallery.txt", "query.txt")


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _hidden(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_new_files_and_folders_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    fsutil.write_text(tmp_path / "a.txt", "x")
    fsutil.write_json(tmp_path / "b.json", {"a": 1})
    with fsutil.atomic_open(tmp_path / "c.bin", "wb") as fh:
        fh.write(b"1")
    d = fsutil.temp_dir(tmp_path / "ckpt")
    fd, f = fsutil.temp_file(tmp_path / "model.onnx", suffix=".part")
    os.close(fd)
    for name in ("a.txt", "b.json", "c.bin"):
        assert _mode(tmp_path / name) == 0o666 & ~mask, name
    assert _mode(f) == 0o666 & ~mask
    assert _mode(d) == 0o777 & ~mask and d.parent == tmp_path and d.name.startswith(".ckpt.")


@pytest.mark.parametrize("old_mode", [0o600, 0o640, 0o664])
def test_a_replaced_file_keeps_its_permissions_and_bak_copies_them(tmp_path, umask, old_mode):
    umask(0o022)
    p = tmp_path / "train.txt"
    p.write_text("old\n")
    os.chmod(p, old_mode)
    bak = fsutil.write_text(p, "new\n", keep_backup=True)
    assert p.read_text() == "new\n" and _mode(p) == old_mode
    assert bak is not None and bak.read_text() == "old\n" and _mode(bak) == old_mode


def test_a_temp_name_for_a_255_byte_name_fits(tmp_path):
    name = "x" * (255 - 4) + ".txt"
    fsutil.write_text(tmp_path / name, "ok")
    assert (tmp_path / name).read_text() == "ok" and _hidden(tmp_path) == []


# ---------------------------------------------------------------------------------------- FileSet

def _old_set(folder: Path, baks: bool = True) -> dict:
    folder.mkdir(exist_ok=True)
    state = {}
    for n in NAMES:
        (folder / n).write_text(f"old {n}\n")
        state[n] = f"old {n}\n"
        if baks:
            (folder / (n + ".bak")).write_text(f"older {n}\n")
            state[n + ".bak"] = f"older {n}\n"
    return state


def _state(folder: Path) -> dict:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


NEW = {n: f"new {n}\n" for n in NAMES}
NEW_STATE = {**NEW, **{n + ".bak": f"old {n}\n" for n in NAMES}}


def _commit(folder: Path) -> None:
    with filetxn.FileSet(folder) as files:
        for n in NAMES:
            files.stage_text(n, NEW[n])
        files.commit()


def test_fileset_switches_all_files_and_keeps_the_old_set_as_bak(tmp_path, umask):
    umask(0o027)
    old = _old_set(tmp_path)
    os.chmod(tmp_path / "gallery.txt", 0o644)
    _commit(tmp_path)
    assert _state(tmp_path) == NEW_STATE and old != NEW_STATE
    assert _mode(tmp_path / "gallery.txt") == 0o644 and _mode(tmp_path / "gallery.txt.bak") == 0o644
    assert _mode(tmp_path / "train.txt") == 0o640  # written by the test under umask 027, kept
    assert _hidden(tmp_path) == []


def test_fileset_first_write_leaves_older_baks_alone_and_a_new_member_drops_its_stale_bak(tmp_path, umask):
    umask(0o022)
    (tmp_path / "query.txt.bak").write_text("ancient\n")
    _commit(tmp_path)  # nothing existed: no backups made, the unrelated .bak stays
    assert _state(tmp_path) == {**NEW, "query.txt.bak": "ancient\n"}
    assert all(_mode(tmp_path / n) == 0o644 for n in NAMES)
    (tmp_path / "query.txt").unlink()
    (tmp_path / "train.txt").write_text("mid\n")
    _commit(tmp_path)  # query.txt did not exist in the previous set: its stale .bak goes
    assert _state(tmp_path) == {**NEW, "train.txt.bak": "mid\n", "gallery.txt.bak": NEW["gallery.txt"]}


class _Inject:
    """Make the k-th call (1-based, counted over every patched function) fail; with ``sticky`` every
    later call fails too (a disk that stays full). ``action`` is what a failing call does."""

    def __init__(self, monkeypatch, k: int, sticky: bool = False, action=None):
        self.k, self.sticky, self.calls = k, sticky, 0
        self.action = action or (lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        for mod, name in ((os, "replace"), (os, "fsync"), (tempfile, "mkstemp"), (os, "unlink")):
            monkeypatch.setattr(mod, name, self._wrap(getattr(mod, name), name))

    def _wrap(self, fn, name):
        def wrapper(*a, **kw):
            if name != "unlink":  # unlink never fails for lack of space; it is patched only to count
                self.calls += 1
                if self.calls == self.k or (self.sticky and self.calls > self.k):
                    self.action()
            return fn(*a, **kw)
        return wrapper


def _count_calls(tmp_path, monkeypatch) -> int:
    folder = tmp_path / "count"
    _old_set(folder)
    with monkeypatch.context() as m:
        inj = _Inject(m, k=10 ** 9)
        _commit(folder)
    return inj.calls


@pytest.mark.parametrize("sticky", [False, True], ids=["transient", "disk-stays-full"])
def test_fileset_failure_at_every_step_leaves_the_old_or_the_new_set(tmp_path, monkeypatch, sticky):
    total = _count_calls(tmp_path, monkeypatch)
    assert total >= 10  # 3 stages + 3 backups (mkstemp + fsync each), journal, 6 renames
    outcomes = set()
    for k in range(1, total + 1):
        folder = tmp_path / f"k{k}"
        old = _old_set(folder)
        with monkeypatch.context() as m:
            _Inject(m, k, sticky)
            try:
                _commit(folder)
                outcomes.add("done")
            except (OSError, ImgfeatError):
                outcomes.add("failed")
        if _state(folder) not in (old, NEW_STATE):  # mid-switch: the journal is there to finish it
            assert (folder / filetxn.JOURNAL).exists(), k
        filetxn.recover(folder)
        after = _state(folder)
        assert after in (old, NEW_STATE), (k, after)
        assert _hidden(folder) == [], (k, _hidden(folder))
    assert "failed" in outcomes


def test_fileset_crash_at_every_step_is_repaired_on_the_next_read(tmp_path, monkeypatch):
    """A real crash: the child process dies (``os._exit``) at the k-th call, no cleanup runs."""
    total = _count_calls(tmp_path, monkeypatch)
    seen = {"old": 0, "new": 0}
    for k in range(1, total + 1):
        folder = tmp_path / f"c{k}"
        old = _old_set(folder)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                with monkeypatch.context() as m:
                    _Inject(m, k, action=lambda: os._exit(7))
                    _commit(folder)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 7, k
        filetxn.recover(folder)
        after = _state(folder)
        assert after in (old, NEW_STATE), (k, after)
        seen["old" if after == old else "new"] += 1
        with filetxn.FileSet(folder):  # the next writer sweeps temps of a run that died before its journal
            pass
        assert _hidden(folder) == [], (k, _hidden(folder))
    assert seen["old"] and seen["new"]  # crashes before and after the commit point were both exercised


def test_fileset_ctrl_c_after_the_commit_point_finishes_the_switch(tmp_path, monkeypatch):
    old = _old_set(tmp_path)
    calls = {"n": 0}
    real = os.replace

    def replace(a, b):
        calls["n"] += 1
        if calls["n"] == 3:  # journal rename was #1, first .bak #2: interrupt the first list rename
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _commit(tmp_path)
    assert _state(tmp_path) == NEW_STATE != old and _hidden(tmp_path) == []


def test_a_second_writer_is_refused_while_the_folder_is_locked(tmp_path):
    _old_set(tmp_path)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's lock (a separate open file description)
        with pytest.raises(UsageError, match="another imgfeat process"):
            _commit(tmp_path)
    finally:
        os.close(fd)
    _commit(tmp_path)
    assert _state(tmp_path) == NEW_STATE


@pytest.mark.parametrize("journal", [
    "{not json", '{"version": 1, "backups": true, "entries": [{"name": "../x", "tmp": ".a.imgfeat-txn", '
    '"had_old": true}]}', '{"version": 1, "backups": true, "entries": [{"name": "a", "tmp": "/etc/passwd", '
    '"had_old": true}]}'])
def test_a_foreign_or_edited_journal_is_refused_not_followed(tmp_path, journal):
    old = _old_set(tmp_path)
    (tmp_path / filetxn.JOURNAL).write_text(journal)
    with pytest.raises(ImgfeatError, match="not a journal imgfeat wrote"):
        filetxn.recover(tmp_path)
    assert _state(tmp_path) == old


# ------------------------------------------------------------------------------- output checks

def _deny_writes_as_root(monkeypatch, folder: Path) -> None:
    """root may write anywhere: make ``os.access`` answer as it would for an ordinary user."""
    if os.access(folder, os.W_OK):
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == folder and m & os.W_OK else real(p, m))


def test_check_output_accepts_ordinary_locations(tmp_path):
    (tmp_path / "old.jsonl").write_text("x")
    for p in (tmp_path / "f.jsonl", tmp_path / "old.jsonl", tmp_path / "new" / "deeper" / "f.npy"):
        assert paths.check_output_file(p) == p
    for p in (tmp_path, tmp_path / "new" / "out"):
        assert paths.check_output_dir(p) == p
    assert sorted(os.listdir(tmp_path)) == ["old.jsonl"]  # nothing created


def _refused(check, target: Path, ro: Path, pattern: str) -> UsageError:
    try:
        with pytest.raises(UsageError, match=pattern) as err:
            check(target)
    finally:
        os.chmod(ro, 0o755)
    assert "\n" not in err.value.message and err.value.hint
    return err.value


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A read-only folder ``ro`` (also for root) and a file ``afile`` in ``tmp_path``."""
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    _deny_writes_as_root(monkeypatch, ro)
    (tmp_path / "afile").write_text("x")
    return tmp_path, ro


@pytest.mark.parametrize("case, pattern", [
    ("dir_as_file", "is a folder, but a file is expected"),
    ("parent_is_file", "is a file, not a folder"),
    ("name_too_long", "longer than 255 bytes"),
    ("read_only", "is not writable"),
    ("fifo", "not a regular file"),
    ("path_too_long", "longer than the system's"),
])
def test_check_output_file_refuses_with_one_line(places, case, pattern):
    base, ro = places
    target = {"dir_as_file": base, "parent_is_file": base / "afile" / "sub" / "f.jsonl",
              "name_too_long": base / ("n" * 300 + ".jsonl"), "read_only": ro / "f.jsonl",
              "fifo": base / "fifo", "path_too_long": base.joinpath(*["d" * 200] * 25, "f.jsonl")}[case]
    if case == "fifo":
        os.mkfifo(target)
    _refused(paths.check_output_file, target, ro, pattern)


@pytest.mark.parametrize("case, pattern", [
    ("file_as_dir", "is a file, but a folder is expected"),
    ("under_a_file", "is a file, not a folder"),
    ("read_only", "is not writable"),
    ("name_too_long", "longer than 255 bytes"),
])
def test_check_output_dir_refuses_with_one_line(places, case, pattern):
    base, ro = places
    target = {"file_as_dir": base / "afile", "under_a_file": base / "afile" / "out",
              "read_only": ro, "name_too_long": base / ("n" * 256) / "out"}[case]
    err = _refused(paths.check_output_dir, target, ro, pattern)
    assert str(target)[:20] in err.message
