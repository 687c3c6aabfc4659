"""Every bad input in docs/bad-input.md gets its documented one-line error,
exit status 2 and no traceback: the table is the test's data, so it stays true.

Commands run in this process (``scarletnas.cli.main``); ``$TMP`` is a folder
of bad files made here, and leading ``VAR=value`` words set the environment.
"""

import io
import json
import pickle
import re
import shlex
from pathlib import Path

import pytest
import torch

from scarletnas import manifest
from scarletnas.checkpoint import save_supernet, save_weights
from scarletnas.cli import main
from scarletnas.config import PipelineConfig
from scarletnas.supernet import Supernet

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"
ROW = re.compile(r"^\| (\d+) \| (.+?) \| `(.+?)` \| `(.+)` \|$")


def documented() -> list[tuple[str, str, str]]:
    rows = [ROW.match(line) for line in DOC.read_text().splitlines()]
    return [(m[2], m[3], m[4]) for m in rows if m]


class _Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def _jpeg(path: Path, size=24, fmt="JPEG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _image_folder(root: Path, bad: str | None = None) -> None:
    for split in ("train", "val"):
        for cls in ("a", "b"):
            for i in range(3):
                _jpeg(root / split / cls / f"{i}.jpg")
    if bad == "empty-class":
        (root / "train" / "c").mkdir()
        (root / "val" / "c").mkdir()
    elif bad == "truncated":
        full = (root / "train" / "a" / "0.jpg").read_bytes()
        (root / "train" / "a" / "1.jpg").write_bytes(full[: len(full) // 2])
    elif bad == "not-an-image":
        (root / "train" / "b" / "2.jpg").write_bytes(b"a text file named .jpg\n")


def _own_images(root: Path, train: dict[str, int], val: int = 3) -> None:
    """A folder for ``run --local --data``: PNGs, ``train[c]`` training images of class c."""
    for cls, n in train.items():
        for i in range(n):
            _jpeg(root / "train" / cls / f"{i:03d}.png", fmt="PNG")
        for i in range(val):
            _jpeg(root / "val" / cls / f"{i:03d}.png", fmt="PNG")


def make_bad_files(tmp: Path) -> Path:
    """The files the table's commands name."""
    (tmp / "folder").mkdir()
    (tmp / "file.txt").write_text("a file, not a folder\n")
    (tmp / "duplicate.yaml").write_text("search:\n  generations: 3\n  generations: 30\n")
    (tmp / "list.yaml").write_text("- search\n- generations\n")
    (tmp / "broken.yaml").write_text("search: {generations: 3\n")
    (tmp / "broken-state.json").write_text('{"generation": 3, "popul')
    (tmp / "list-state.json").write_text("[1, 2, 3]")
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "empty-token").write_text("\n")  # a KFP token file without a token
    (tmp / "pickle.pt").write_bytes(pickle.dumps(_Evil()))

    cfg = PipelineConfig()
    _, space, description = manifest.prepare(cfg)
    manifest.write(str(tmp / "dataset.json"), description)
    supernet = Supernet(space)
    save_supernet(str(tmp / "supernet.pt"), supernet)
    blob = (tmp / "supernet.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    save_weights(str(tmp / "weights.pt"), torch.nn.Linear(2, 2), {"kind": "subnet"})
    for bad in ("empty-class", "truncated", "not-an-image"):
        _image_folder(tmp / f"images-{bad}", bad)
    _own_images(tmp / "own-one-class", {"cat": 40})
    _own_images(tmp / "own-few", {"cat": 3, "dog": 40})
    _own_images(tmp / "own-small", {"cat": 10, "dog": 10})
    _own_images(tmp / "own-corrupt", {"cat": 40, "dog": 40})
    (tmp / "own-corrupt" / "train" / "cat" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    _own_images(tmp / "own-no-train", {"cat": 0, "dog": 0})  # val/ only
    return tmp


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return make_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("what,command,error", documented(), ids=[r[0] for r in documented()])
def test_bad_input_gets_its_documented_error(what, command, error, tmp, capsys, monkeypatch):
    words = shlex.split(command.replace("$TMP", str(tmp)))
    while "=" in words[0] and not words[0].startswith("scarlet-nas"):
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
    assert words.pop(0) == "scarlet-nas"
    monkeypatch.chdir(tmp)
    try:
        status = main(words)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.split("error: ", 1)[1] == error.replace("$TMP", str(tmp)), err


def test_the_table_covers_at_least_40_bad_inputs():
    rows = documented()
    assert len(rows) >= 40
    assert len({r[1] for r in rows}) == len(rows)  # no command twice


def test_a_malicious_pickle_never_runs(tmp, capsys):
    main(["search", "--dataset", str(tmp / "dataset.json"), "--supernet", str(tmp / "pickle.pt"),
          "--out", str(tmp / "out")])
    assert "this ran" not in capsys.readouterr().out


def test_bad_search_state_is_left_as_it_was(tmp):
    before = (tmp / "broken-state.json").read_bytes()
    main(["search", "--dataset", str(tmp / "dataset.json"), "--supernet",
          str(tmp / "supernet.pt"), "--out", str(tmp / "out"), "--state",
          str(tmp / "broken-state.json")])
    assert (tmp / "broken-state.json").read_bytes() == before
    assert json.loads((tmp / "list-state.json").read_text()) == [1, 2, 3]
