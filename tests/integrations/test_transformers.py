"""Hugging Face's Trainer with the constrained step: it lands, and it resumes bit-identical."""

from __future__ import annotations

import pytest
import torch

import ctrlsparse as cs

transformers = pytest.importorskip("transformers")
from ctrlsparse.integrations.transformers import SparsityCallback, attach  # noqa: E402

STEPS = 30


def _bert(seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)  # fmt: skip
    model = BertForSequenceClassification(config)
    example = {
        "input_ids": torch.randint(0, 50, (2, 8)),
        "attention_mask": torch.ones(2, 8, dtype=torch.long),
    }
    return cs.sparsify(model, example_input=example)


def _data(n=64):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 50, (n, 8), generator=g)
    labels = (ids[:, 0] > 25).long()  # learnable from the first token
    return [{"input_ids": i, "attention_mask": torch.ones(8, dtype=torch.long), "labels": y}
            for i, y in zip(ids, labels)]  # fmt: skip


def _trainer(out, model, total_steps=STEPS, optimizer=None, **args):
    from transformers import Trainer, TrainingArguments

    gda = cs.GDA(cs.SparsityProblem(model, target_density=0.4),
                 torch.optim.AdamW(model.parameters(), lr=5e-3), total_steps=total_steps)  # fmt: skip
    settings = dict(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=8, save_steps=10,
                    logging_steps=5, report_to=[], use_cpu=True, seed=0, disable_tqdm=True)  # fmt: skip
    settings.update(args)
    trainer = Trainer(model=model, args=TrainingArguments(**settings), train_dataset=_data(),
                      optimizers=(optimizer or gda.as_optimizer(), None),
                      callbacks=[SparsityCallback(gda)])  # fmt: skip
    return trainer, gda


def test_the_trainer_lands_on_the_target_and_logs_the_constraint(tmp_path):
    trainer, gda = _trainer(tmp_path, _bert())
    trainer.train()
    summary = gda.summary()
    assert gda.steps == STEPS and gda.decision is not None  # the feasibility phase ran
    assert summary.realized["model"] <= 0.4
    logged = [entry for entry in trainer.state.log_history if "multiplier/model" in entry]
    assert logged and {"density/model", "level/model", "violation/model"} <= set(logged[-1])


def test_a_resumed_trainer_run_ends_bit_identical(tmp_path):
    straight, gda = _trainer(tmp_path / "a", _bert())
    straight.train()
    resumed, gda_resumed = _trainer(tmp_path / "b", _bert(seed=1))  # other weights: the checkpoint's win
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-20"))
    assert gda_resumed.steps == STEPS and gda_resumed.decision == gda.decision
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert gda_resumed.problem.multiplier_values() == gda.problem.multiplier_values()
    assert gda_resumed.problem.levels == gda.problem.levels


def test_gradient_accumulation_steps_the_gda_once_per_window(tmp_path):
    trainer, gda = _trainer(tmp_path, _bert(), per_device_train_batch_size=4, gradient_accumulation_steps=2)
    trainer.train()
    assert gda.steps == STEPS


def test_a_trainer_without_the_constrained_optimizer_is_refused_before_any_step(tmp_path):
    model = _bert()
    plain = torch.optim.AdamW(model.parameters())
    trainer, gda = _trainer(tmp_path, model, optimizer=plain)
    with pytest.raises(ValueError, match=r"optimizer is AdamW, not this GDA.*gda.as_optimizer\(\)"):
        trainer.train()
    assert gda.steps == 0


def test_a_gda_planned_for_another_length_is_refused(tmp_path):
    trainer, _ = _trainer(tmp_path, _bert(), total_steps=100)
    with pytest.raises(ValueError, match=r"planned for total_steps=100, but this Trainer takes 30"):
        trainer.train()


def test_attach_constrains_a_built_trainer_and_its_reporters_see_the_constraint(tmp_path):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    seen = []

    class Reporter(TrainerCallback):  # stands for TensorBoard or W&B: a callback before ours
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    model = _bert()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=8,
                             logging_steps=10, report_to=[], use_cpu=True, disable_tqdm=True)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=_data(), callbacks=[Reporter()])
    primal = torch.optim.AdamW(model.parameters(), lr=5e-3)
    gda = cs.GDA(cs.SparsityProblem(model, target_density=0.4), primal, total_steps=STEPS)
    attach(trainer, gda)
    trainer.train()
    assert gda.steps == STEPS and gda.summary().realized["model"] <= 0.4
    assert any("multiplier/model" in logs for logs in seen)
    with pytest.raises(ValueError, match="already has an optimizer"):
        attach(
            Trainer(model=model, args=args, optimizers=(torch.optim.SGD(model.parameters(), 0.1), None)), gda
        )


def test_a_tiny_causal_lm_trains_under_the_trainer_and_resumes_bit_identical(tmp_path):
    """A Llama computing its own next-token loss (labels in the batch): heads, MLP neurons and
    the hidden dimension gated; the Trainer lands on ε and a resumed run ends bit-identical."""
    from tests.helpers import VOCAB, tiny_decoder

    def gated(seed):
        torch.manual_seed(seed)
        return cs.sparsify(tiny_decoder("llama"), hidden=True)

    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, VOCAB, (32, 12), generator=g)
    text = [{"input_ids": row, "labels": row} for row in ids]

    def run(out, seed, resume=None):
        from transformers import Trainer, TrainingArguments

        model = gated(seed)
        primal = torch.optim.AdamW(model.parameters(), lr=5e-3)
        gda = cs.GDA(cs.SparsityProblem(model, target_density=0.5), primal, total_steps=20)
        args = TrainingArguments(output_dir=str(out), max_steps=20, per_device_train_batch_size=8,
                                 save_steps=10, report_to=[], use_cpu=True, seed=0,
                                 disable_tqdm=True)  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=text)
        attach(trainer, gda)
        trainer.train(resume_from_checkpoint=resume)
        return model, gda

    straight, gda = run(tmp_path / "a", 0)
    assert gda.decision is not None and gda.summary().realized["model"] <= 0.5
    resumed, gda_resumed = run(tmp_path / "b", 1, resume=str(tmp_path / "a" / "checkpoint-10"))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert gda_resumed.problem.multiplier_values() == gda.problem.multiplier_values()
