"""lightning.Trainer with the constrained step: it lands, and it resumes bit-identical."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ctrlsparse as cs

lightning = pytest.importorskip("lightning")
from ctrlsparse.integrations.lightning import SparsityCallback  # noqa: E402

EPOCHS, BATCHES = 4, 8


class Module(lightning.LightningModule):
    def __init__(self, seed=0, total_steps=EPOCHS * BATCHES, optimizer=None):
        super().__init__()
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
        self.net = cs.sparsify(net, example_input=torch.zeros(2, 12))
        primal = torch.optim.Adam(self.net.parameters(), lr=1e-2)
        self.gda = cs.GDA(cs.SparsityProblem(self.net, target_density=0.4), primal, total_steps=total_steps)
        self.optimizer = optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return self.optimizer or self.gda.as_optimizer()


def _loader():
    x = torch.randn(BATCHES * 16, 12, generator=torch.Generator().manual_seed(0))
    y = (x @ torch.randn(12, 3, generator=torch.Generator().manual_seed(7))).argmax(1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def _trainer(tmp_path, module, **settings):
    return lightning.Trainer(max_epochs=EPOCHS, callbacks=[SparsityCallback(module.gda)], accelerator="cpu",
                             default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                             enable_model_summary=False, **settings)  # fmt: skip


def test_lightning_lands_on_the_target(tmp_path):
    module = Module()
    _trainer(tmp_path, module, enable_checkpointing=False).fit(module, _loader())
    assert module.gda.steps == EPOCHS * BATCHES and module.gda.decision is not None
    assert module.gda.summary().realized["model"] <= 0.4


def test_a_resumed_lightning_run_ends_bit_identical(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    straight = Module()
    keep = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer = _trainer(tmp_path, straight)
    trainer.callbacks.append(keep)
    trainer.fit(straight, _loader())
    resumed = Module(seed=1)
    _trainer(tmp_path / "b", resumed, enable_checkpointing=False).fit(
        resumed, _loader(), ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=16.ckpt")
    )
    assert resumed.gda.steps == straight.gda.steps and resumed.gda.decision == straight.gda.decision
    for a, b in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.gda.problem.multiplier_values() == straight.gda.problem.multiplier_values()


def test_accumulation_and_clipping_step_once_per_window(tmp_path):
    module = Module(total_steps=EPOCHS * BATCHES // 2)
    trainer = _trainer(tmp_path, module, enable_checkpointing=False, accumulate_grad_batches=2,
                       gradient_clip_val=0.5)  # fmt: skip
    trainer.fit(module, _loader())
    assert module.gda.steps == EPOCHS * BATCHES // 2
    assert module.gda.summary().realized["model"] <= 0.4


def test_a_module_without_the_constrained_optimizer_is_refused(tmp_path):
    module = Module()
    module.optimizer = torch.optim.Adam(module.net.parameters())
    with pytest.raises(ValueError, match=r"optimizers are Adam, not this GDA"):
        _trainer(tmp_path, module, enable_checkpointing=False).fit(module, _loader())
    assert module.gda.steps == 0
