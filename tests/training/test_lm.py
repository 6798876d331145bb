"""Next-token loss, distillation from a teacher, and perplexity."""

import copy
import math

import pytest
import torch
from torch import nn

from ctrlsparse.training.lm import Distillation, distillation_loss, next_token_loss, perplexity


class Bigram(nn.Module):
    """logits[t] = table[ids[t]]: a causal LM whose outputs are known by hand."""

    def __init__(self, vocab=5):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, input_ids):
        return self.table(input_ids)


def test_next_token_loss_is_the_mean_negative_log_probability_of_each_label():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]])
    labels = torch.tensor([[0, 1]])
    by_hand = -(
        math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(math.exp(1) / (1 + math.exp(1) + math.exp(3)))
    )
    assert float(next_token_loss(logits, labels)) == pytest.approx(by_hand / 2, rel=1e-6)


def test_next_token_loss_reads_hugging_face_outputs():
    class Output:
        logits = torch.zeros(2, 3, 4)

    assert float(next_token_loss(Output(), torch.zeros(2, 3, dtype=torch.long))) == pytest.approx(math.log(4))


def test_kl_is_zero_when_student_equals_teacher_and_positive_otherwise():
    z, y = torch.randn(2, 3, 7), torch.randint(0, 7, (2, 3))
    assert float(distillation_loss(z, z, y, weight=1.0, temperature=3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(z, z.flip(-1), y, weight=1.0)) > 0.1
    # weight 0 is the next-token loss alone, whatever the teacher says
    assert torch.allclose(distillation_loss(z, torch.randn_like(z), y, weight=0.0), next_token_loss(z, y))


def test_distillation_sends_no_gradient_to_the_teacher_and_scales_by_t_squared():
    student = torch.randn(1, 4, 6, requires_grad=True)
    teacher = torch.randn(1, 4, 6, requires_grad=True)
    y = torch.randint(0, 6, (1, 4))
    distillation_loss(student, teacher, y, weight=1.0, temperature=2.0).backward()
    assert teacher.grad is None and student.grad is not None
    flat_s, flat_t = student.detach().reshape(-1, 6) / 4.0, teacher.detach().reshape(-1, 6) / 4.0
    kl = (flat_t.softmax(-1) * (flat_t.log_softmax(-1) - flat_s.log_softmax(-1))).sum(-1).mean()
    loss = distillation_loss(student, teacher, y, weight=1.0, temperature=4.0)
    assert float(loss.detach()) == pytest.approx(16 * float(kl), rel=1e-5)


def test_distillation_runs_the_teacher_on_the_students_training_inputs():
    student = Bigram()
    teacher = copy.deepcopy(student)
    loss = Distillation(teacher, weight=1.0, temperature=2.0)
    with pytest.raises(RuntimeError, match="attach"):
        loss(student(torch.zeros(1, 3, dtype=torch.long)), torch.zeros(1, 3, dtype=torch.long))
    loss.attach(student)
    ids, labels = torch.randint(0, 5, (2, 4)), torch.randint(0, 5, (2, 4))
    assert float(loss(student(ids), labels).detach()) == pytest.approx(0.0, abs=1e-6)  # same weights
    with torch.no_grad():
        student.table.weight.add_(torch.randn(5, 5))
    assert float(loss(student(ids), labels).detach()) > 0.0
    with pytest.raises(ValueError, match=r"weight must lie in \[0, 1\], got 1.5"):
        Distillation(teacher, weight=1.5)


def test_perplexity_is_exp_of_the_mean_nll_over_all_tokens():
    model = Bigram(vocab=3)
    with torch.no_grad():
        model.table.weight.copy_(torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    log_p = model.table.weight.detach().log_softmax(-1)
    batches = [
        (torch.tensor([[0, 1]]), torch.tensor([[2, 0]])),
        (torch.tensor([[2, 0], [1, 1]]), torch.tensor([[1, 1], [2, 0]])),
    ]
    nll = [-log_p[x, y] for xs, ys in batches for x, y in zip(xs.flatten().tolist(), ys.flatten().tolist())]
    assert perplexity(model, batches) == pytest.approx(math.exp(sum(float(v) for v in nll) / 6), rel=1e-6)
    assert model.training  # restored after evaluation
