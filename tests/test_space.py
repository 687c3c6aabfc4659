import numpy as np
import pytest

from scarletnas import PRESETS, ArchError, SearchSpace
from scarletnas.sampling import random_population


def test_imagenet_space_matches_the_paper(imagenet_space):
    s = imagenet_space
    assert s.num_layers == 19
    assert [layer.out_channels for layer in s.layers] == [
        32, 32, 40, 40, 40, 40, 80, 80, 80, 80, 96, 96, 96, 96, 192, 192, 192, 192, 320]
    assert [layer.stride for layer in s.layers] == [
        2, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert s.skippable_layers == (2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18)
    assert len(s.choices) == 13 and s.tokens[-1] == "skip"
    assert sorted(set(s.num_choices)) == [12, 13]
    assert s.final_size == 7 and s.stem_out == 32 and s.separable_out == 16


def test_skip_eligibility_is_derived_from_geometry():
    # No stride-2 layers and equal widths: every layer but the first may skip.
    flat = SearchSpace(num_classes=10, input_size=8, layer_channels=(16, 16, 16),
                       layer_strides=(1, 1, 1), separable_channels=8)
    assert flat.skippable_layers == (2, 3)
    widen = flat.with_(separable_channels=16)
    assert widen.skippable_layers == (1, 2, 3)
    assert widen.with_(layer_strides=(1, 2, 1)).skippable_layers == (1, 3)
    assert widen.with_(allow_skip=False).skippable_layers == ()


def test_small_space_keeps_the_papers_skip_layers(small_space):
    assert small_space.skippable_layers == SearchSpace.imagenet().skippable_layers
    assert small_space.final_size == 4  # 16 -> 8 -> 4


def test_compact_stem_halves_the_input_only_from_24_px():
    """Below 24 px the compact space's layers keep the input's side until its
    transition (16 px images: 16 then 8 px maps, not 8 then 4); from 24 px the
    stem halves it. A stride given explicitly wins."""
    def sides(size, **kw):
        return [layer.in_size for layer in SearchSpace.compact(input_size=size, **kw).layers]

    assert sides(8) == [8] * 5 + [4] * 3
    assert sides(16) == [16] * 5 + [8] * 3
    assert sides(24) == [12] * 5 + [6] * 3
    assert sides(32) == [16] * 5 + [8] * 3
    assert sides(16, stem_stride=2) == [8] * 5 + [4] * 3


def test_width_multiplier_scales_channels_to_multiples_of_8():
    s = SearchSpace.imagenet(width_mult=0.5)
    assert all(layer.out_channels % 8 == 0 for layer in s.layers)
    assert s.layers[-1].out_channels == 160


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_parse_and_round_trip(imagenet_space, name):
    genes = imagenet_space.parse(name)
    assert imagenet_space.format(genes) == PRESETS[name]
    assert imagenet_space.parse(name.lower().replace("-", "_")) == genes


def test_presets_use_skip_where_the_paper_says(imagenet_space):
    skips = {n: [i + 1 for i, tok in enumerate(PRESETS[n].split("-")) if tok == "skip"]
             for n in PRESETS}
    assert skips == {"SCARLET-A": [], "SCARLET-B": [9, 17], "SCARLET-C": [4, 5, 16]}


def test_codec_round_trip_1000_random_archs(imagenet_space, rng):
    pop = random_population(imagenet_space, 1000, rng)
    for row in pop:
        genes = tuple(int(g) for g in row)
        text = imagenet_space.format(genes)
        assert imagenet_space.parse(text) == genes
        assert imagenet_space.format(imagenet_space.parse(text)) == text


def test_parse_accepts_paper_spelling(imagenet_space):
    paper = "-".join(t.replace("se", "+SE").upper() if t != "skip" else "skip"
                     for t in PRESETS["SCARLET-B"].split("-"))
    assert imagenet_space.parse(paper) == imagenet_space.parse("SCARLET-B")


def test_wrong_layer_count_says_how_many(imagenet_space):
    with pytest.raises(ArchError, match=r"has 3 layer\(s\) but the search space has 19"):
        imagenet_space.parse("e3k3-e3k5-e3k7")


def test_unknown_token_lists_valid_ones(imagenet_space):
    tokens = PRESETS["SCARLET-A"].split("-")
    tokens[4] = "e4k3"
    with pytest.raises(ArchError) as err:
        imagenet_space.parse("-".join(tokens))
    msg = str(err.value)
    assert "'e4k3' at layer 5" in msg
    assert "e3k3, e3k3se" in msg and "skip" in msg


def test_choice_outside_the_spaces_choice_set(imagenet_space):
    no_se = imagenet_space.with_(se_options=(False,))
    with pytest.raises(ArchError, match="unknown choice 'e3k7se' at layer 4"):
        no_se.parse("SCARLET-A")


@pytest.mark.parametrize("layer,reason", [(1, "stride 2 and channels change 16->32"),
                                          (3, "stride 2 and channels change 32->40"),
                                          (11, "channels change 80->96")])
def test_skip_where_not_allowed_names_layer_and_reason(imagenet_space, layer, reason):
    tokens = PRESETS["SCARLET-A"].split("-")
    tokens[layer - 1] = "skip"
    with pytest.raises(ArchError) as err:
        imagenet_space.parse("-".join(tokens))
    assert f"layer {layer} cannot skip ({reason})" in str(err.value)
    assert "2, 4-6, 8-10, 12-14, 16-18" in str(err.value)


def test_out_of_range_gene(imagenet_space):
    with pytest.raises(ArchError, match="gene 13 at layer 1 is out of range"):
        imagenet_space.parse((13,) + (0,) * 18)


def test_space_serialises_and_fingerprints(small_space):
    again = SearchSpace.from_dict(small_space.to_dict())
    assert again == small_space
    assert again.fingerprint == small_space.fingerprint
    assert small_space.with_(num_classes=11).fingerprint != small_space.fingerprint
    with pytest.raises(ValueError, match="unknown search space field"):
        SearchSpace.from_dict({"num_clases": 10})


@pytest.mark.parametrize("kwargs,msg", [
    ({"num_classes": 1}, "at least 2 classes"),
    ({"layer_strides": (1, 2)}, "one stride per layer"),
    ({"kernels": (4,)}, "odd sizes"),
    ({"layer_strides": (3,) * 19}, "strides must be 1 or 2"),
])
def test_invalid_space_is_rejected(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SearchSpace(**kwargs)


def test_space_size(imagenet_space):
    assert imagenet_space.size == 12 ** 6 * 13 ** 13
    assert np.all(random_population(imagenet_space, 200, np.random.default_rng(0))
                  < np.asarray(imagenet_space.num_choices))
