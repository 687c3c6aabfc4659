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


def test_join_and_split():
    assert storage.join("s3://bucket/runs/", "x", "/y.pt") == "s3://bucket/runs/x/y.pt"
    assert storage.split_s3("s3://bucket/k/e/y") == ("bucket", "k/e/y")
    with pytest.raises(storage.StorageError, match="names no bucket"):
        storage.split_s3("s3:///key")
