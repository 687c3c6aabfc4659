"""bench/reproduce_stabilizer.py pools stand-alone accuracies across files and
judges several supernet files as one; what it refuses keeps figures honest."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "reproduce_stabilizer.py"
spec = importlib.util.spec_from_file_location("reproduce_stabilizer", BENCH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

ARCHS = ["a", "b", "c"]
SETTINGS = {"space": {"shortcut": True}, "dataset": "imagefolder", "source": "shapes",
            "input_size": 32, "width": 0.5, "lr": 0.1, "batch": 64, "standalone_epochs": 8,
            "standalone_zero_init": 1, "standalone_first_seed": 0, "steps": 600, "sampled": 20,
            "seeds": [0]}


def standalone_file(tmp_path, name, rows, **settings):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"settings": SETTINGS | settings, "seed_noise": {},
                                "standalone": rows, "runs": []}))
    return str(path)


def row(arch, *top1, first=0):
    return {"arch": arch, "val_top1": sum(top1) / len(top1), "val_top1_seeds": list(top1),
            "seeds": list(range(first, first + len(top1)))}


def run_results(**settings):
    return {"settings": SETTINGS | settings, "standalone": [], "seed_noise": {}, "runs": []}


def test_files_holding_parts_of_the_archs_pool_their_seeds(tmp_path):
    part1 = standalone_file(tmp_path, "p1", [row("a", 0.9), row("c", 0.7)])
    part2 = standalone_file(tmp_path, "p2", [row("b", 0.8)])
    seed1 = standalone_file(tmp_path, "s1", [row(x, v, first=1) for x, v in
                                              zip(ARCHS, (0.92, 0.78, 0.72), strict=True)],
                            standalone_first_seed=1)
    results = run_results(standalone_zero_init=0)  # this run's label is replaced by the files'
    bench.reuse_standalone(results, [part1, part2, seed1], ARCHS)
    assert [r["arch"] for r in results["standalone"]] == ARCHS
    assert [r["seeds"] for r in results["standalone"]] == [[0, 1]] * 3
    assert results["standalone"][0]["val_top1"] == pytest.approx(0.91)
    assert results["settings"]["standalone_zero_init"] == 1
    # pooled within-arch std of pairs (0.9, 0.92), (0.8, 0.78), (0.7, 0.72): 0.02 / sqrt 2
    assert results["seed_noise"]["pooled_std"] == pytest.approx(0.02 / 2 ** 0.5)


@pytest.mark.parametrize("files, message", [
    ([[row("a", 0.9), row("b", 0.8)]], "trained by none"),
    ([[row("a", 0.9), row("b", 0.8), row("c", 0.7)], [row("a", 0.9)]], "repeat"),
    ([[row("a", 0.9), row("b", 0.8), row("z", 0.7)]], "other archs"),
])
def test_pooling_refuses_a_missing_arch_a_repeated_seed_or_another_arch(tmp_path, files,
                                                                         message):
    paths = [standalone_file(tmp_path, f"f{i}", rows) for i, rows in enumerate(files)]
    with pytest.raises(SystemExit, match=message):
        bench.reuse_standalone(run_results(), paths, ARCHS)


def test_pooling_refuses_other_data_or_another_recipe(tmp_path):
    rows = [row(x, 0.8) for x in ARCHS]
    other_data = standalone_file(tmp_path, "d", rows, source="elsewhere")
    with pytest.raises(SystemExit, match="other data.*source"):
        bench.reuse_standalone(run_results(), [other_data], ARCHS)
    zero = standalone_file(tmp_path, "z", rows)
    released = standalone_file(tmp_path, "r", [row(x, 0.8, first=1) for x in ARCHS],
                               standalone_zero_init=0, standalone_first_seed=1)
    with pytest.raises(SystemExit, match="another recipe"):
        bench.reuse_standalone(run_results(), [zero, released], ARCHS)


def test_report_refuses_supernet_files_of_another_budget_or_a_repeated_run(tmp_path):
    def supernet_file(name, **settings):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(run_results(**settings) | {
            "ranked_archs": ARCHS, "runs": [{"variant": "stabilizer", "seed": 0}]}))
        return path

    first, longer = supernet_file("a"), supernet_file("b", steps=1500)
    with pytest.raises(SystemExit, match="otherwise.*steps"):
        bench.report([first, longer], 0.05)
    with pytest.raises(SystemExit, match="repeats a variant and seed"):
        bench.report([first, first], 0.05)


def test_report_says_how_far_its_two_seed_truth_lets_a_ranking_go(tmp_path):
    """The recorded distorted-digits run: 18 close archs, one stand-alone seed
    orders them against the other at +0.45, and an exact ranker would reach
    about +0.67 against their mean, the bar a supernet's close tau is read against."""
    recorded = BENCH.parents[1] / "docs/reproduction/two_seeds/steps1500/results.json"
    bench.report([recorded], 0.05, out=tmp_path)
    ceiling = json.loads((tmp_path / "results.json").read_text())["truth_ceiling"]
    assert ceiling["n"] == 18 and ceiling["seeds"] == 2
    assert ceiling["seed_tau"] == pytest.approx(0.451, abs=1e-3)
    assert ceiling["ceiling"] == pytest.approx(0.667, abs=1e-3)
