import gzip
import json
import struct

import numpy as np
import pytest
import torch

from ctrlsparse.runs import RunSummary, write_json, write_summary


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures made by a test are closed after it (pyplot keeps every open figure alive)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def pytest_configure(config):
    # Two CPU cores: keep torch from oversubscribing them when pytest-xdist is not used.
    torch.set_num_threads(2)


def _fake_run(
    path, name="digits_mlp", targets=None, penalties=None, layers=("fc1", "fc2"), steps=30, error=0.05
):
    """A synthetic run directory, as fit() writes it."""
    targets, penalties = targets or {}, penalties or {}
    path.mkdir(parents=True)
    write_json(path / "config.json", {"name": name})
    levels = {**targets, **{k: 0.0 for k in penalties}}
    with (path / "metrics.jsonl").open("w") as f:
        for step in range(1, steps + 1):
            densities = {n: 0.8 - 0.5 * step / steps for n in layers}
            density = sum(densities.values()) / len(layers)
            record = {
                "step": step,
                "epoch": 1 + step // 10,
                "loss": 2.0 / step,
                "density": density,
                "densities": densities,
                "multipliers": {k: penalties.get(k, 0.01 * step) for k in levels},
                "violations": {k: (density if k == "model" else densities[k]) - v for k, v in levels.items()},
            }
            if step % 10 == 0:
                record["test_error"] = error + 0.1 / step
            f.write(json.dumps(record) + "\n")
    summary = RunSummary(
        method="hard_concrete",
        mode="constrained" if targets else "penalized",
        targets=targets,
        penalties=penalties,
        density=density,
        densities=densities,
        realized_density=density,
        test_error=error,
        multipliers={k: penalties.get(k, 0.3) for k in levels},
        params={"dense": 100, "remaining": 40},
        macs={"dense": 1000, "remaining": 300},
    )
    write_summary(path, summary)
    torch.save(
        {f"{n}.input_gate.gate.log_alpha": torch.linspace(-10, 10, 50) for n in layers}, path / "model.pt"
    )
    return path


@pytest.fixture
def make_run():
    """Factory of synthetic run directories (see _fake_run)."""
    return _fake_run


def _write_idx(path, array, code=0x08, compress=False, cut=0):
    """Write ``array`` in IDX format (the layout of MNIST files), optionally gzip it or cut bytes off."""
    array = np.asarray(array)
    data = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data += array.astype(array.dtype.newbyteorder(">")).tobytes()
    data = data[: len(data) - cut]
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture(name="write_idx")
def write_idx_fixture():
    """Writer of IDX files (see _write_idx)."""
    return _write_idx


class Reordered(torch.nn.Module):
    """Registers ``head`` before ``body`` but runs ``body`` first: registration != forward order."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 2)
        self.body = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture
def reordered():
    return Reordered()
