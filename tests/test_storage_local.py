import os

import pytest

from scarletnas import storage


def test_write_read_list_delete(tmp_path):
    uri = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(uri, b"hello")
    assert storage.read_bytes(uri) == b"hello" and storage.exists(uri)
    storage.write_bytes(uri, b"again")
    assert storage.read_bytes(uri) == b"again"
    assert storage.list_prefix(str(tmp_path)) == [uri]
    storage.delete(uri)
    assert not storage.exists(uri)
    with pytest.raises(storage.StorageError, match="b.bin: no such file"):
        storage.read_bytes(uri)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    uri = str(tmp_path / "checkpoint.pt")
    storage.write_bytes(uri, b"complete")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(uri, b"partial")
    monkeypatch.undo()
    assert storage.read_bytes(uri) == b"complete"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_a_write_removes_what_killed_writers_left(tmp_path):
    """Temporaries of the same file whose writer is gone (and that are a minute
    old) are removed; a live writer's, or a fresh one's, are left alone."""
    import subprocess
    import sys
    import time

    target = tmp_path / "state.pt"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)
    old = time.time() - 3600
    orphan = tmp_path / f".state.pt.{dead}.abc.tmp"
    fresh = tmp_path / f".state.pt.{dead}.def.tmp"
    live = tmp_path / f".state.pt.{os.getpid()}.ghi.tmp"
    other = tmp_path / f".other.pt.{dead}.jkl.tmp"
    for path in (orphan, fresh, live, other):
        path.write_bytes(b"x" * 1000)
    for path in (orphan, live, other):
        os.utime(path, (old, old))
    storage.write_bytes(str(target), b"new")
    assert not orphan.exists()
    assert fresh.exists() and live.exists() and other.exists()
    assert target.read_bytes() == b"new"


def test_check_writable_probes_without_leaving_anything(tmp_path):
    storage.check_writable(str(tmp_path / "new" / "out.pt"))
    assert list((tmp_path / "new").iterdir()) == []
    with pytest.raises(storage.StorageError, match="is a folder; name a file"):
        storage.check_writable(str(tmp_path))


def test_join_and_split():
    assert storage.join("s3://bucket/runs/", "x", "/y.pt") == "s3://bucket/runs/x/y.pt"
    assert storage.split_s3("s3://bucket/k/e/y") == ("bucket", "k/e/y")
    with pytest.raises(storage.StorageError, match="names no bucket"):
        storage.split_s3("s3:///key")


def test_prune_mirrors_the_listing_and_leaves_writers_alone(tmp_path):
    """What a synced copy holds beyond the bucket goes, folders included; a
    temporary file (another process mid-write) stays."""
    dest = tmp_path / "copy"
    for name in ("a/1.jpg", "a/2.jpg", "gone/3.jpg", "a/.2.jpg.99.x.tmp"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(b"x")
    (dest / "b").mkdir()  # will receive files in this sync
    storage._prune(dest, {dest / "a" / "1.jpg", dest / "b" / "4.jpg"})
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert left == ["a", "a/.2.jpg.99.x.tmp", "a/1.jpg", "b"]
