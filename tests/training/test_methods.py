import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctrlsparse import Batches, evaluate, fit, load_run
from ctrlsparse.training.methods import L1RDA, MagnitudePruning, plain_layers


def _net():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _data(n=64):
    x = torch.randn(n, 6)
    return Batches(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long(), batch_size=16, shuffle=True)


def _pruner(net, target, structure="weight", prune_epoch=0):
    return MagnitudePruning(
        net, F.cross_entropy, target, torch.optim.Adam(net.parameters(), 1e-2), prune_epoch, structure
    )


@pytest.mark.parametrize("target", [0.1, 0.33, 0.5, 1.0])
def test_global_unstructured_pruning_hits_the_density_exactly_and_keeps_the_largest(target):
    net = _net()
    weights = torch.cat([net[0].weight.detach().flatten(), net[2].weight.detach().flatten()]).abs()
    trainer = _pruner(net, target)
    trainer.prune()
    density, _ = trainer.densities()
    assert density == round(target * 72) / 72  # 48 + 24 weights
    kept = torch.cat([net[0].weight.flatten(), net[2].weight.flatten()]).detach() != 0
    assert weights[kept].min() >= weights[~kept].max() if (~kept).any() else True


def test_per_layer_unstructured_pruning_hits_each_layer_exactly():
    trainer = _pruner(_net(), {"0": 0.25, "2": 0.5})
    trainer.prune()
    _, densities = trainer.densities()
    assert densities == {"0": 12 / 48, "2": 12 / 24}


def test_neuron_pruning_removes_whole_input_columns():
    net = _net()
    trainer = _pruner(net, [0.5, 0.25], structure="neuron")
    trainer.prune()
    for layer, open_columns in ((net[0], 3), (net[2], 2)):
        nonzero_columns = (layer.weight != 0).any(0)
        assert int(nonzero_columns.sum()) == open_columns
        assert bool((layer.weight[:, nonzero_columns] != 0).all())


def test_model_wise_neuron_pruning_stays_at_or_below_the_target():
    net = _net()
    trainer = _pruner(net, 0.4, structure="neuron")
    trainer.prune()
    density, _ = trainer.densities()
    assert 0.4 - 8 / 72 < density <= 0.4  # whole groups of 8 (layer 0) or 3 (layer 2) weights


def test_fit_prunes_at_the_epoch_boundary_and_leaves_a_plain_model(tmp_path):
    net = _net()
    summary = fit(
        _pruner(net, 0.25, prune_epoch=2), _data(), epochs=4, test_batches=_data(), run_dir=tmp_path
    )
    records = load_run(tmp_path).metrics()
    steps_per_epoch = 4
    assert all(r["density"] == 1.0 for r in records[: 2 * steps_per_epoch])
    assert all(r["density"] == 18 / 72 for r in records[2 * steps_per_epoch :])  # fine-tuning keeps zeros
    assert summary.method == "magnitude" and summary.mode == "pruned"
    assert summary.density == summary.realized_density == 18 / 72
    assert summary.targets == {"model": 0.25}
    state = torch.load(tmp_path / "model.pt")
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}  # masks made permanent
    assert summary.params["remaining"] == summary.params["dense"] - 54


def test_pruning_after_the_last_epoch_when_there_is_no_fine_tuning():
    net, test = _net(), _data()
    summary = fit(_pruner(net, 0.5, prune_epoch=2), _data(), epochs=2, test_batches=test, progress=False)
    assert summary.density == 0.5
    assert summary.test_error == evaluate(net, test)  # measured after the last pruning


def test_l1_rda_training_produces_exact_zeros_and_a_summary(tmp_path):
    torch.manual_seed(1)
    net = _net()
    trainer = L1RDA(net, F.cross_entropy, penalty=0.05, gamma=2.0)
    summary = fit(trainer, _data(), epochs=5, test_batches=_data(), run_dir=tmp_path, progress=False)
    zeros = sum(int((m.weight == 0).sum()) for m in plain_layers(net).values())
    assert zeros > 0
    assert summary.density == pytest.approx(1 - zeros / 72)
    assert summary.method == "l1_rda" and summary.penalties == {"0": 0.05, "2": 0.05}
    assert (net[0].bias != 0).all()  # biases carry no penalty


def test_stronger_l1_penalty_gives_lower_density():
    densities = []
    for penalty in (0.0, 0.02, 0.2):
        torch.manual_seed(0)
        trainer = L1RDA(_net(), F.cross_entropy, penalty=penalty)
        densities.append(fit(trainer, _data(), epochs=3, progress=False).density)
    assert densities[0] == 1.0 and densities[0] > densities[1] > densities[2]


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match=r"target_density for 'model' must lie in \(0, 1\], got 1.5"):
        _pruner(_net(), 1.5)
    with pytest.raises(ValueError, match="unknown layer name 'fc9'; valid names: model, 0, 2"):
        _pruner(_net(), {"fc9": 0.5})
    with pytest.raises(ValueError, match="penalty for '0' must be a finite number >= 0"):
        L1RDA(_net(), F.cross_entropy, penalty=-1.0)
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d layer"):
        plain_layers(nn.Sequential(nn.ReLU()))
