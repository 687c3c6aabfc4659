"""Hopeless work is refused before it starts, and never retried."""

import json
import os

import pytest

from scarletnas import storage
from scarletnas.config import ConfigError, PipelineConfig, load_pipeline_config
from scarletnas.data import DataError
from scarletnas.preflight import check, final_failure


def test_budgets_no_arch_meets_are_refused_before_any_step():
    check(PipelineConfig())  # the defaults can succeed
    with pytest.raises(ConfigError, match="MAdds budget 1 is below the smallest arch"):
        check(load_pipeline_config(None, ["search.max_madds=1"]))
    # an image folder's classes are unknown until it is read: checked at two classes
    folder = ["data.dataset=imagefolder", "data.source=s3://bucket/images"]
    with pytest.raises(ConfigError, match="params budget 10 is below"):
        check(load_pipeline_config(None, [*folder, "search.max_params=10"]))
    check(load_pipeline_config(None, [*folder, "search.max_params=1e6"]))


def test_a_deterministic_failure_is_final(tmp_path):
    """The first attempt fails and records why; a retry fails at once, running nothing."""
    state = str(tmp_path / "run-1" / "search")
    ran = []
    with pytest.raises(DataError, match="the data changed"):
        with final_failure(state, "search"):
            ran.append(1)
            raise DataError("the data changed since prepare_data described it")
    record = json.loads(storage.read_bytes(os.path.join(state, "failed.json")))
    assert record == {"step": "search", "type": "DataError",
                      "error": "the data changed since prepare_data described it"}
    with pytest.raises(ConfigError, match="search already failed with an error a retry cannot "
                                          "change, so it is not run again: the data changed"):
        with final_failure(state, "search"):
            ran.append(2)
    assert ran == [1]


@pytest.mark.parametrize("transient", [storage.StorageError("s3://b/k", "S3 endpoint down"),
                                       ConnectionResetError("reset by peer"),
                                       RuntimeError("NCCL timeout")])
def test_a_failure_a_retry_may_fix_is_retried(tmp_path, transient):
    state = str(tmp_path / "supernet")
    with pytest.raises(type(transient)):
        with final_failure(state, "train_supernet"):
            raise transient
    assert not os.path.exists(os.path.join(state, "failed.json"))
    with final_failure(state, "train_supernet"):
        pass  # the retry runs


def test_without_a_checkpoint_root_nothing_is_recorded(tmp_path):
    with pytest.raises(ValueError):
        with final_failure("", "retrain"):
            raise ValueError("bad arch")
    assert list(tmp_path.iterdir()) == []


def test_a_training_process_failure_is_final_when_its_error_is(tmp_path):
    """An error raised in a training process reaches the step as a WorkerError
    that names its class: bad input stays final, a crash may be retried."""
    from scarletnas.launch import WorkerError

    for kind, final in (("DataError", True), ("RuntimeError", False), ("", False)):
        state = str(tmp_path / (kind or "none"))
        with pytest.raises(WorkerError):
            with final_failure(state, "train_supernet"):
                raise WorkerError(1, kind, f"{kind}: boom")
        assert os.path.exists(os.path.join(state, "failed.json")) == final


def test_a_space_too_deep_for_its_input_is_refused_naming_the_smallest_that_works():
    from scarletnas.preflight import check_geometry, smallest_input
    from scarletnas.space import SearchSpace

    # compact: one stride-2 layer; below 24 px its stem keeps the input's side
    for preset, need in (("imagenet", 32), ("small", 4), ("compact", 2)):
        space = SearchSpace.named(preset, num_classes=2, input_size=need)
        assert smallest_input(space) == need
        check_geometry(space, preset)
        with pytest.raises(ConfigError, match=f"use data.input_size={need} or more"):
            check_geometry(SearchSpace.named(preset, num_classes=2, input_size=need - 1), preset)


@pytest.mark.parametrize("ref,ok", [
    ("scarlet-nas:0.1.0", True), ("registry.example.com:5000/team/scarlet-nas:v1", True),
    ("ghcr.io/org/img@sha256:" + "a" * 64, True), ("localhost/x_y.z__w", True),
    ("Registry.Example.com/team/img", True), ("[::1]:5000/img:tag", True),
    ("bad image name", False), ("Team/img", False), ("img:", False), ("img:-tag", False),
    ("img@sha256:abc", False), ("", False), ("a" * 256, False), ("team//img", False)])
def test_image_references_follow_the_oci_grammar(ref, ok):
    from scarletnas.preflight import check_image

    if ok:
        check_image(ref)
    else:
        with pytest.raises(ConfigError, match="is not a container image reference"):
            check_image(ref)


def test_the_input_size_of_ones_own_images_is_their_median_shorter_side():
    from scarletnas.preflight import ImageFolder, input_size_for

    def size(*sides):
        return input_size_for(ImageFolder("x", {"a": 5, "b": 5}, 2, list(sides)))

    assert size(61, 30, 500) == 64  # the median, to a multiple of 8
    assert size(14, 20, 18) == 16 and size(10, 12, 9) == 8  # small images stay small
    assert size(5, 6, 4) == 8 and size(900, 1200, 3000) == 224  # within 8..224
    assert size() == 16
