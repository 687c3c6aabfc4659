import numpy as np
import pytest
import torch
from torch import nn

from scarletnas import PRESETS, SearchSpace, Supernet, build_subnet, load_released_state_dict
from scarletnas.ops import Stabilizer
from scarletnas.sampling import random_population


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BN non-trivial statistics and affine params, so eval-mode
    comparisons exercise them."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _archs(space, n, seed):
    pop = random_population(space, n, np.random.default_rng(seed))
    # Make sure skips (and so stabilizers) are exercised.
    pop[:, [1, 3]] = space.skip_index
    return [tuple(int(g) for g in row) for row in pop]


@torch.no_grad()
def _calibrate(supernet: Supernet, arch, x: torch.Tensor) -> None:
    """Set BN statistics to this path's batch statistics, so eval-mode outputs
    keep their scale and a wrong weight anywhere on the path would show."""
    for m in supernet.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    supernet.train()(x, arch)
    supernet.eval()


@pytest.mark.parametrize("stabilizer", [True, False])
def test_supernet_path_equals_inheriting_subnet(small_space, stabilizer):
    supernet = Supernet(small_space, stabilizer=stabilizer)
    _randomize_bn(supernet, torch.Generator().manual_seed(1))
    x = torch.randn(16, 3, 16, 16)
    for arch in _archs(small_space, 20, seed=2):
        _calibrate(supernet, arch, x)
        subnet = build_subnet(arch, supernet=supernet, stabilizer=stabilizer).eval()
        with torch.no_grad():
            ours, theirs = supernet(x, arch), subnet(x)
        assert ours.std(0).mean() > 0.05  # outputs depend on the input
        diff = (ours - theirs).abs().max().item()
        assert diff < 1e-5, (small_space.format(arch), diff)
        assert any(isinstance(m, Stabilizer) for m in subnet.modules()) == stabilizer


def test_plain_subnet_differs_from_a_stabilized_path(small_space):
    """Dropping a trained stabilizer changes the function: the plain subnet is
    a proxy to retrain, not a copy (unless the stabilizer is the identity)."""
    arch = _archs(small_space, 1, seed=3)[0]
    x = torch.randn(8, 3, 16, 16)
    for init, differs in (("kaiming", True), ("identity", False)):
        # Train-mode BN keeps the signal alive at init (eval-mode BN with
        # fresh statistics shrinks it to almost nothing over 19 layers).
        supernet = Supernet(small_space, stabilizer=True, stabilizer_init=init).train()
        plain = build_subnet(arch, supernet=supernet).train()
        with torch.no_grad():
            path = supernet(x, arch)
            rel = ((path - plain(x)).abs().max() / path.abs().max()).item()
        assert (rel > 1e-2) == differs, (init, rel)


def test_backward_reaches_only_the_sampled_path(small_space):
    supernet = Supernet(small_space, stabilizer=True).train()
    arch = _archs(small_space, 1, seed=4)[0]
    loss = nn.functional.cross_entropy(supernet(torch.randn(8, 3, 16, 16), arch),
                                       torch.randint(0, 10, (8,)))
    loss.backward()
    on_path = {id(p) for p in supernet.path_parameters(arch)}
    with_grad = {id(p) for p in supernet.parameters() if p.grad is not None}
    assert with_grad == on_path
    assert len(on_path) < sum(1 for _ in supernet.parameters()) / 5


@pytest.mark.parametrize("shortcut", [False, True])
def test_sgd_leaves_unsampled_choices_untouched(small_space, shortcut):
    """set_to_none grads: SGD with momentum and decay skips choices off the path,
    bit for bit; a layer's shared shortcut is on every path through it.
    (Release init: with zeroed residual branches the first step's gradients
    inside a residual branch are exactly zero, so "on the path" would not
    imply "moved".)"""
    small_space = small_space.with_(shortcut=shortcut)
    supernet = Supernet(small_space, stabilizer=True, zero_init_residual=False).train()
    opt = torch.optim.SGD(supernet.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    first, second = _archs(small_space, 2, seed=5)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    for arch in (first, second, first):
        opt.zero_grad(set_to_none=True)
        supernet(torch.randn(8, 3, 16, 16), arch).logsumexp(1).mean().backward()
        opt.step()
    touched = {id(p) for a in (first, second) for p in supernet.path_parameters(a)}
    for name, p in supernet.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (id(p) in touched), name


def test_supernet_rejects_invalid_arch(small_space):
    supernet = Supernet(small_space)
    with pytest.raises(ValueError, match="layer 1 cannot skip"):
        supernet(torch.randn(1, 3, 16, 16), (small_space.skip_index,) + (0,) * 18)


def test_supernet_holds_every_choice(imagenet_space):
    supernet = Supernet(imagenet_space)
    ops = list(supernet.choice_ops())
    assert len(ops) == sum(imagenet_space.num_choices) == 241
    stabilizers = [m for _, g, m in ops if g == imagenet_space.skip_index]
    assert len(stabilizers) == 13 and all(isinstance(m, Stabilizer) for m in stabilizers)
    plain = Supernet(imagenet_space, stabilizer=False)
    assert all(isinstance(m, nn.Identity) for _, g, m in plain.choice_ops()
               if g == imagenet_space.skip_index)


def test_stabilizer_is_a_bare_1x1_conv():
    s = Stabilizer(24)
    assert s.kernel_size == (1, 1) and s.bias is None
    assert [n for n, _ in s.named_parameters()] == ["weight"]
    ident = Stabilizer(24, init="identity")
    x = torch.randn(2, 24, 5, 5)
    assert torch.equal(ident(x), x)
    with pytest.raises(ValueError, match="unknown stabilizer init"):
        Stabilizer(4, init="zeros")


def test_warm_up_runs_every_op_and_leaves_no_trace(small_space):
    supernet = Supernet(small_space)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    assert supernet.warm_up(batch=2) == sum(small_space.num_choices)
    after = supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in supernet.parameters())


# ---- the authors' released models -------------------------------------------
def _released_layout(arch: str, num_classes: int = 1000):
    """Key names and shapes of the authors' released SCARLET models, written
    from the paper's description of their modules (stem, separable_conv,
    mb_module.<i>.{conv1,bn1,conv2,bn2,mid_se,conv3,bn3}, conv_before_pooling,
    classifier)."""
    def bn(prefix, c):
        return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)),
                (f"{prefix}.running_mean", (c,)), (f"{prefix}.running_var", (c,)),
                (f"{prefix}.num_batches_tracked", ())]

    out = [("stem.0.weight", (32, 3, 3, 3)), *bn("stem.1", 32),
           ("separable_conv.0.weight", (32, 1, 3, 3)), *bn("separable_conv.1", 32),
           ("separable_conv.3.weight", (16, 32, 1, 1)), *bn("separable_conv.4", 16)]
    widths = [32, 32, 40, 40, 40, 40, 80, 80, 80, 80, 96, 96, 96, 96, 192, 192, 192, 192, 320]
    cin = 16
    for i, (tok, cout) in enumerate(zip(arch.split("-"), widths, strict=True)):
        if tok == "skip":
            continue
        e, k, se = int(tok[1]), int(tok[3]), tok.endswith("se")
        h, p = cin * e, f"mb_module.{i}"
        out += [(f"{p}.conv1.weight", (h, cin, 1, 1)), *bn(f"{p}.bn1", h),
                (f"{p}.conv2.weight", (h, 1, k, k)), *bn(f"{p}.bn2", h)]
        if se:
            out += [(f"{p}.mid_se.squeeze_conv.weight", (h // 4, h, 1, 1)),
                    (f"{p}.mid_se.squeeze_conv.bias", (h // 4,)),
                    (f"{p}.mid_se.excite_conv.weight", (h, h // 4, 1, 1)),
                    (f"{p}.mid_se.excite_conv.bias", (h,))]
        out += [(f"{p}.conv3.weight", (cout, h, 1, 1)), *bn(f"{p}.bn3", cout)]
        cin = cout
    out += [("conv_before_pooling.0.weight", (1280, 320, 1, 1)), *bn("conv_before_pooling.1", 1280),
            ("classifier.weight", (num_classes, 1280)), ("classifier.bias", (num_classes,))]
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_state_dict_shapes_match_the_released_models(name):
    ours = [tuple(v.shape) for v in build_subnet(name, num_classes=1000).state_dict().values()]
    assert ours == [shape for _, shape in _released_layout(PRESETS[name])]


def test_load_released_checkpoint_places_every_tensor():
    layout = _released_layout(PRESETS["SCARLET-B"])
    gen = torch.Generator().manual_seed(0)
    released = {"module." + k: (torch.randn(s, generator=gen) if s else torch.tensor(7))
                for k, s in layout}
    model = build_subnet("SCARLET-B")
    load_released_state_dict(model, {"state_dict": released})
    for (ours, value), theirs in zip(model.state_dict().items(), released.values(), strict=True):
        assert torch.equal(value, theirs), ours
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_load_released_checkpoint_rejects_the_wrong_arch():
    released = {k: torch.zeros(s) for k, s in _released_layout(PRESETS["SCARLET-A"])}
    with pytest.raises(ValueError, match="checkpoint holds .* tensors but"):
        load_released_state_dict(build_subnet("SCARLET-C"), released)
    released = {k: torch.zeros(s) for k, s in _released_layout(PRESETS["SCARLET-A"], 10)}
    with pytest.raises(ValueError, match="shape mismatch: checkpoint tensor classifier.weight"):
        load_released_state_dict(build_subnet("SCARLET-A"), released)


def test_build_subnet_overrides_and_errors(small_space):
    net = build_subnet("SCARLET-C", num_classes=7, input_size=64, space=small_space)
    assert net.space.num_classes == 7 and net.space.input_size == 64
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    supernet = Supernet(small_space, stabilizer=False)
    with pytest.raises(ValueError, match="no stabilizer to keep"):
        build_subnet("SCARLET-C", supernet=supernet, stabilizer=True)
    with pytest.raises(ValueError, match="search space differs"):
        build_subnet("SCARLET-C", supernet=supernet, num_classes=5)


def test_release_initialization():
    net = build_subnet("SCARLET-A", space=SearchSpace.small())
    conv = net.layers[0].expand[0]
    assert abs(conv.weight.std().item() - (2.0 / conv.out_channels) ** 0.5) < 0.05
    bound = 1 / net.classifier.out_features ** 0.5
    assert net.classifier.weight.abs().max() <= bound and not net.classifier.bias.any()
    assert all(torch.equal(m.weight, torch.ones_like(m.weight))
               for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_shortcut_pooling_at_odd_sizes_exports_to_pt2_and_onnx(tmp_path):
    """A stride-2 shortcut on an odd feature map (9 -> 5 here) pools a partial
    window at the edge; PyTorch, the .pt2 program and ONNX Runtime must agree
    on it, and the cost table on every op."""
    from scarletnas.complexity import arch_cost, count_with_hooks
    from scarletnas.export import check_onnx, check_program, export, export_onnx, save_program
    from scarletnas.subnet import Subnet

    space = SearchSpace(num_classes=10, input_size=18, stem_channels=16, stem_stride=1,
                        separable_channels=8, layer_channels=(8, 16, 24),
                        layer_strides=(1, 2, 2), head_channels=64, shortcut=True)
    assert [(s.in_size, s.out_size) for s in space.layers if s.shortcut] == [(18, 9), (9, 5)]
    model = Subnet(space, "e3k3-e6k5se-e3k7").eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)  # an eval-mode network that is not all zeros
    assert arch_cost(space, model.arch) == count_with_hooks(model, 18)
    program = export(model, 18)
    check_program(model, save_program(program, tmp_path / "m.pt2"), 18)
    check_onnx(model, export_onnx(program, 18, tmp_path / "m.onnx"), 18)
