"""Generated image folders: deterministic, the requested shape, and refused when
they cannot be made."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from scarletnas.cli import main
from scarletnas.synthetic import SHAPES, classes, stripe_classes, write_shapes, write_stripes


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.jpg")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_the_same_arguments_give_the_same_bytes_and_a_new_seed_does_not(tmp_path):
    a = write_shapes(tmp_path / "a", 4, 24, 3, 2, seed=3)
    b = write_shapes(tmp_path / "b", 4, 24, 3, 2, seed=3)
    c = write_shapes(tmp_path / "c", 4, 24, 3, 2, seed=4)
    assert _digest(a) == _digest(b) != _digest(c)


def test_folder_layout_sizes_and_twenty_classes(tmp_path):
    root = write_shapes(tmp_path / "s", 20, 40, 2, 1)
    train = sorted(p.name for p in (root / "train").iterdir())
    assert train == sorted(classes(20)) and len(train) == 20 == 2 * len(SHAPES)
    assert sorted(p.name for p in (root / "val").iterdir()) == train
    assert len(list(root.rglob("*.jpg"))) == 20 * 3
    img = Image.open(next(root.rglob("*.jpg")))
    assert img.size == (40, 40) and img.mode == "RGB"


def test_classes_differ_in_shape_not_in_colour(tmp_path):
    """The mean image of a class is flat (colours and positions are random), so
    no class can be told apart by its average colour alone."""
    root = write_shapes(tmp_path / "s", 3, 16, 40, 1)
    means = [np.stack([np.asarray(Image.open(p), dtype=float)
                       for p in (root / "train" / c).glob("*.jpg")]).mean((0, 1, 2))
             for c in classes(3)]
    assert np.ptp(np.stack(means), axis=0).max() < 20


def test_stripes_are_deterministic_and_one_orientation_per_class(tmp_path):
    """Each class's stripes run at its own angle: the dominant gradient direction
    of a class's images (its structure tensor) points across its stripes, to within
    the 5 degrees of jitter (at 16 px: 8 px gradients skew it by up to 10)."""
    a = write_stripes(tmp_path / "a", 6, 16, 30, 2, seed=1)
    assert _digest(a) == _digest(write_stripes(tmp_path / "b", 6, 16, 30, 2, seed=1)) \
        != _digest(write_stripes(tmp_path / "c", 6, 16, 30, 2, seed=2))
    names = stripe_classes(6)
    assert names == ["stripes-000", "stripes-018", "stripes-036", "stripes-054",
                     "stripes-072", "stripes-090"]
    assert sorted(p.name for p in (a / "train").iterdir()) == names
    for k, name in enumerate(names):
        tensor = np.zeros((2, 2))  # the structure tensor of the class's images
        for path in (a / "train" / name).glob("*.jpg"):
            grey = np.asarray(Image.open(path), dtype=float).mean(2)
            gy, gx = np.gradient(grey)
            tensor += [[(gx * gx).sum(), (gx * gy).sum()], [(gx * gy).sum(), (gy * gy).sum()]]
        _, vectors = np.linalg.eigh(tensor)
        across = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1])) % 180
        assert min(abs(across - 18 * k), 180 - abs(across - 18 * k)) < 6, (name, across)
        # a mirror image (flips in training) lands on no other class's angle
        mirrored = (180 - 18 * k) % 180
        assert all(min(abs(mirrored - 18 * j), 180 - abs(mirrored - 18 * j)) >= 18
                   for j in range(6) if j != k)
    with pytest.raises(ValueError, match="2..7 classes"):
        stripe_classes(8)


def test_make_shapes_command_and_its_refusals(tmp_path, capsys):
    assert main(["make-shapes", str(tmp_path / "d"), "--classes", "3", "--size", "16",
                 "--train", "2", "--val", "1"]) == 0
    assert "try it: scarlet-nas run --local --data" in capsys.readouterr().out
    assert len(list((tmp_path / "d").rglob("*.jpg"))) == 9
    assert main(["make-shapes", str(tmp_path / "d")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["make-shapes", str(tmp_path / "e"), "--classes", "21"]) == 2
    assert "2..20" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 8 px"):
        write_shapes(tmp_path / "f", 2, 4, 1, 1)
    assert main(["make-shapes", str(tmp_path / "g"), "--stripes", "--classes", "4", "--size",
                 "8", "--train", "2", "--val", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "g" / "train").iterdir()) == stripe_classes(4)
    assert main(["make-shapes", str(tmp_path / "h"), "--stripes", "--size", "8", "--train", "1",
                 "--val", "1"]) == 0  # six orientations unless told
    assert sorted(p.name for p in (tmp_path / "h" / "train").iterdir()) == stripe_classes(6)
