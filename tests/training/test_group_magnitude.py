import pytest
import torch
import torch.nn.functional as F

import ctrlsparse as cs
from ctrlsparse.gating import Accounting, MaskGate
from ctrlsparse.models import fashion_resnet
from ctrlsparse.training.group_magnitude import GroupMagnitudePruning, unit_scores

X = torch.randn(8, 1, 28, 28)
Y = torch.randint(0, 10, (8,))


def _masked():
    return cs.sparsify(fashion_resnet(), example_input=X[:2], gates="mask")


def _trainer(model, target, prune_epoch=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return GroupMagnitudePruning(model, F.cross_entropy, target, opt, prune_epoch=prune_epoch)


def test_mask_gates_leave_the_model_dense_until_pruning():
    torch.manual_seed(0)
    plain = fashion_resnet().eval()
    model = cs.sparsify(__import__("copy").deepcopy(plain), example_input=X[:2], gates="mask").eval()
    assert all(isinstance(g.gate, MaskGate) for g in cs.gate_groups(model))
    assert torch.allclose(model(X), plain(X), atol=1e-6)


def test_per_stage_targets_hold_and_the_weakest_units_close_first():
    torch.manual_seed(0)
    model = _masked()
    targets = {"layer2.*": 0.4, "layer3.*": 0.3}
    trainer = _trainer(model, targets)
    scores = {g.name: unit_scores(model, g) for g in cs.gate_groups(model)}
    trainer.step(X, Y)  # prune_epoch 0: prunes before the first step
    _, per_layer = Accounting(model).densities(realized=True)
    for name in trainer.targets:
        assert per_layer[name] <= trainer.targets[name] + 1e-6
    assert per_layer["conv1"] == 1.0  # layer1's units were never needed
    for group in cs.gate_groups(model):
        closed, kept = scores[group.name][group.gate.mask == 0], scores[group.name][group.gate.mask == 1]
        assert len(kept) >= 1
        if len(closed):
            assert closed.max() <= kept.min()


def test_model_wise_target_and_purge_removes_what_was_counted():
    torch.manual_seed(0)
    model = _masked()
    trainer = _trainer(model, 0.3)
    trainer.prune()
    density, _ = trainer.densities()
    assert 0.2 < density <= 0.3
    model.eval()
    small = cs.purge(model, X[:2])
    assert torch.allclose(small(X), model(X), atol=1e-5)
    remaining = cs.count(model, X[:1])[0].params_remaining
    assert sum(p.numel() for p in small.parameters()) == remaining


def test_rejects_learned_gates_and_bad_targets():
    gated = cs.sparsify(fashion_resnet(), example_input=X[:2])
    with pytest.raises(ValueError, match="gates='mask'; found HardConcrete gates"):
        _trainer(gated, 0.3)
    with pytest.raises(ValueError, match=r"target_density for 'model' must lie in \(0, 1\], got 1.5"):
        _trainer(_masked(), 1.5)
