"""ctrlsparse's gated step against the reference implementation's, in one process
(docs/performance.md).

    git --git-dir=/work/.mirror/gallego-posada+constrained_sparsity/repo archive HEAD | tar -x -C /tmp/reference
    .venv-dev/bin/python docs/scripts/reference_overhead.py /tmp/reference --model lenet5 --threads 2

REFERENCE is a checkout of gallego-posada/constrained_sparsity (Gallego-Posada et al.,
2022). Its code is imported from there and is never copied into ctrlsparse: its
``sparse/models.py`` and ``sparse/l0_layers.py`` are loaded without running the package
``__init__`` files, which need torchvision, wandb and an older cooper.

Three training steps on the same minibatch of Fashion-MNIST (batch 128), Adam (lr 7e-4)
on every parameter:

- dense: ctrlsparse's plain model (MLP 784-300-100 or LeNet-5-Caffe 20-50-800-500) and
  cross-entropy, the step ``ctrlsparse bench overhead`` compares with (its Adam as
  ctrlsparse builds it from the problem file: torch's fused kernel, see
  ``ctrlsparse.problem.kernels``);
- reference: its ``L0MLP`` / ``L0LeNet5`` with ``sparsity_type="structured"`` (one gate
  per input neuron of the linear layers and per output channel of the convolutions, the
  structure of problems/fashion_*.toml), the Lagrangian ``loss + λ (E[L0 density] − ε)``
  from its ``regularization()``, backward, torch's default Adam (its per-tensor loop on the
  CPU), one SGD dual step on λ (projected onto λ ≥ 0), and its ``clamp_parameters()``;
- ctrlsparse: ``GDA.step`` on problems/fashion_mlp.toml or fashion_lenet5.toml (the
  paper's settings: SGD dual step, dual restarts), built by ``overhead_steps``.

``--fused-reference`` adds the reference's step with torch's fused Adam, the kernel
ctrlsparse's primal Adam takes: ``ctrlsparse / reference fused`` compares the two steps
at the same optimizer kernel.

``--same-start`` starts the reference's model from the weights, biases and gate parameters
of ctrlsparse's gated model (:func:`start_like`), and puts every step's model back to those
weights before each repetition (:func:`rewinder`): some kernels' time depends on the data
(max pooling on LeNet-5), the two libraries initialise differently, and models trained on
one minibatch drift apart.

``--weight-scaling`` adds ctrlsparse's step with the input scaling of Linear layers off
(every gate multiplies a weight, as before that change), to measure it in the same process.

``--count-ops`` also prints the ATen operators one step of each dispatches (as
``op_count.py`` counts them).

``--hand-written`` adds ctrlsparse's gated model (``sparsify``'s parametrizations, the
problem's expected density) trained by the reference's step written out by hand: loss +
λ (density − ε), backward, Adam (the kernel GDA's takes), one projected SGD dual step, the clamp. It separates
what the gated model costs from what ``GDA.step`` adds (cooper's CMP state and
Lagrangians, the dual optimizer, the restarts, the logging transfer).

``--user-adam`` adds the README's path: ``GDA.step`` with the optimizer a user passes,
``torch.optim.Adam(model.parameters(), lr=7e-4)`` as torch builds it (its per-tensor loop on
the CPU, the kernel the reference's own Adam takes; GDA gives the gates' group the fused
kernel where the user left the choice to torch). ``ctrlsparse user Adam / reference`` compares
the two steps on the user's path, at the same kernel for the weights.

``--compile-step`` adds ``GDA(..., compile="step")`` (forward, backward, Lagrangian and dual
update compiled, the primal Adam eager) and the dense step with its forward compiled (its
backward compiled with it), so that ``compile step / dense compiled`` is the gated/dense ratio
with both compiled. The first compiled steps (the warm-up) take a minute on the CPU.

``--compile`` adds a fourth step: ctrlsparse's ``GDA(..., compile=True)`` (the gated
forward, gate sampling included, through ``torch.compile``; the dense and reference steps
stay eager, as a user of the reference would run it).

The steps alternate in one process (the order rotates every repetition); the script
prints, for the reference and for ctrlsparse, the median ratio to the dense step over
the repetitions, with min and max, the median milliseconds per step, and the ratio
ctrlsparse / reference per repetition.
"""

import argparse
import copy
import importlib
import inspect
import statistics
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from ctrlsparse.experiments.bench import alternate_many, overhead_steps, spread
from ctrlsparse.experiments.config import load_problem
from ctrlsparse.gating import Accounting
from ctrlsparse.problem.kernels import adam

PROBLEMS = Path(__file__).parents[2] / "problems"
TARGET = {"mlp": 0.33, "lenet5": 0.1}


def load_reference(root: Path) -> types.ModuleType:
    """The reference's ``sparse.models``, imported from ``root`` without its package ``__init__`` files."""
    for name in ("utils", "sparse"):
        if not (root / name).is_dir():
            raise SystemExit(f"{root} is not a checkout of gallego-posada/constrained_sparsity (no {name}/)")
        package = types.ModuleType(name)
        package.__path__ = [str(root / name)]
        sys.modules[name] = package
    sys.modules["utils"].basic_utils = importlib.import_module("utils.basic_utils")
    return importlib.import_module("sparse.models")


def start_like(reference: torch.nn.Module, gated: torch.nn.Module) -> None:
    """Give the reference's model the weights, biases and gate parameters of ctrlsparse's gated model.

    The steps' kernels are not all data-blind: max pooling runs 15% longer on LeNet-5's first
    activations when 54% of them are zeros than when 79% are (docs/performance.md), and the two
    libraries initialise differently (the reference doubles its initial weights). Started from
    the same point and trained on the same minibatch, both models stay alike.
    """
    ours = [m for m in gated.modules() if hasattr(m, "parametrizations") and "weight" in m.parametrizations]
    theirs = reference.layers_dict["l0"]
    if len(ours) != len(theirs):
        raise SystemExit(f"{len(ours)} gated layers here, {len(theirs)} L0 layers in the reference")
    with torch.no_grad():
        for mine, layer in zip(ours, theirs):
            group = getattr(mine, "output_gate", None) or mine.input_gate
            bias = mine.parametrizations.bias.original if "bias" in mine.parametrizations else mine.bias
            pairs = [(layer.weight, mine.parametrizations.weight.original), (layer.bias, bias),
                     (layer.weight_log_alpha, group.gate.parameter)]  # fmt: skip
            for target, source in pairs:
                if target.shape != source.shape:
                    shapes = f"reference {tuple(target.shape)}, ours {tuple(source.shape)}"
                    raise SystemExit(f"the models' shapes differ: {shapes}")
                target.copy_(source)


def rewinder(steps):
    """A function that puts the model behind each step back to its weights of now (``--same-start``).

    Called before each repetition, it times every step on the same weights and gates, where
    models trained on and on drift apart and with them the data-dependent kernels' time.
    """
    models = []
    for step in steps:
        nonlocals = inspect.getclosurevars(step).nonlocals
        model = nonlocals["gda"].model if "gda" in nonlocals else nonlocals.get("model")
        model = model if model is not None else nonlocals["dense_forward"]
        models.append((model, {k: v.detach().clone() for k, v in model.state_dict().items()}))

    def rewind() -> None:
        for model, state in models:
            model.load_state_dict(state)

    return rewind


def reference_step(
    models: types.ModuleType, name: str, x: torch.Tensor, y: torch.Tensor, fused=False, like=None
):
    """The reference's training step; ``like``: a gated model of ctrlsparse's to start from
    (:func:`start_like`)."""
    if name == "mlp":
        model = models.L0MLP(784, 10, sparsity_type="structured", layer_dims=(300, 100))
    else:
        model = models.L0LeNet5(10, sparsity_type="structured", input_shape=(1, 28, 28))
    if like is not None:
        start_like(model, like)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=7e-4, fused=fused or None)
    multiplier, dual_lr, target = torch.zeros(()), 1e-4, TARGET[name]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        violation = model.regularization().l0_model - target
        (loss + multiplier * violation).backward()
        optimizer.step()
        multiplier.add_(dual_lr * violation.detach()).clamp_(min=0)  # one SGD ascent step
        for layer in model.layers_dict["l0"]:
            layer.clamp_parameters()

    return step


def hand_written_step(
    gated_step, x: torch.Tensor, y: torch.Tensor, target: float, mark=None, user_adam=False, shared=False
):
    """ctrlsparse's gated model and density, trained by a step written like the reference's.

    ``mark(phase)``, if given, is called at the end of each phase (``gda_phases.py`` times them).
    ``user_adam``: torch's Adam as a user builds it (its per-tensor loop on the CPU) instead of
    the fused kernel GDA's own Adam takes. ``shared``: train the GDA's own model rather than a
    copy, so that both steps run on the same weights (the data-dependent kernels' time).
    """
    problem = inspect.getclosurevars(gated_step).nonlocals["gda"].problem
    model = problem.model if shared else copy.deepcopy(problem.model)
    accounting = Accounting(model)
    gates = [group.gate.parameter for group in accounting.groups]
    ranges = [group.gate.parameter_range for group in accounting.groups]
    optimizer = (torch.optim.Adam if user_adam else adam)(model.parameters(), lr=7e-4)
    multiplier, dual_lr = torch.zeros(()), 1e-4
    mark = mark or (lambda phase: None)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        mark("zero_grad")
        loss = F.cross_entropy(model(x), y)
        violation = accounting.densities()[0] - target
        mark("forward and densities")
        lagrangian = loss + multiplier * violation
        mark("Lagrangians")
        lagrangian.backward()
        mark("backward")
        optimizer.step()
        mark("primal step")
        multiplier.add_(dual_lr * violation.detach()).clamp_(min=0)
        mark("dual step")
        with torch.no_grad():
            for gate, (low, high) in zip(gates, ranges):
                gate.clamp_(low, high)
        mark("outside the roll")

    return step


def weights_only(gated_step):
    """``gated_step`` with its Linear layers' input scaling off: every gate multiplies a weight."""
    from ctrlsparse.gating.groups import remove_input_scaling

    model = inspect.getclosurevars(gated_step).nonlocals["gda"].model
    remove_input_scaling(model)
    return gated_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="checkout of gallego-posada/constrained_sparsity")
    parser.add_argument("--model", choices=["mlp", "lenet5"], default="lenet5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--compile", action="store_true", help="also time ctrlsparse's compiled step")
    parser.add_argument("--count-ops", action="store_true", help="also count each step's operators")
    parser.add_argument(
        "--user-adam", action="store_true", help="also time GDA.step with a plain torch.optim.Adam (README)"
    )
    parser.add_argument(
        "--compile-step",
        action="store_true",
        help="also time GDA(..., compile='step') and the dense step with a compiled forward",
    )
    parser.add_argument(
        "--hand-written",
        action="store_true",
        help="also time ctrlsparse's gated model trained by a hand-written step like the reference's",
    )
    parser.add_argument(
        "--fused-reference",
        action="store_true",
        help="also time the reference's step with torch's fused Adam (ctrlsparse's primal Adam's kernel)",
    )
    parser.add_argument(
        "--same-start",
        action="store_true",
        help="start every step from ctrlsparse's weights and gates, and rewind them before each repetition",
    )
    parser.add_argument(
        "--weight-scaling",
        action="store_true",
        help="also time ctrlsparse's step with every gate on the weights (no input scaling)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = load_reference(args.reference.resolve())
    config = load_problem(PROBLEMS / f"fashion_{args.model}.toml")
    total = (args.steps + 1) * (args.repetitions + 4)
    ours, dense = overhead_steps(config, total)
    from ctrlsparse.experiments.build import load_data

    data = load_data(config)
    x, y = data.train[0][: config.train.batch_size], data.train[1][: config.train.batch_size]
    like = inspect.getclosurevars(ours).nonlocals["gda"].model if args.same_start else None
    reference = reference_step(models, args.model, x, y, like=like)
    steps = {"dense": dense, "reference": reference, "ctrlsparse": ours}
    if args.compile:
        steps["compiled"] = overhead_steps(config, (args.steps + 1) * (args.repetitions + 1), compile=True)[0]
    if args.user_adam:
        steps["ctrlsparse user Adam"] = overhead_steps(
            config, total, primal=lambda model: torch.optim.Adam(model.parameters(), lr=7e-4)
        )[0]
    if args.compile_step:
        steps["compile step"], steps["dense compiled"] = overhead_steps(config, total, compile="step")
    if args.fused_reference:
        steps["reference fused"] = reference_step(models, args.model, x, y, fused=True, like=like)
    if args.hand_written:
        steps["hand-written"] = hand_written_step(ours, x, y, TARGET[args.model])
    if args.weight_scaling:
        steps["weights only"] = weights_only(
            overhead_steps(config, (args.steps + 1) * (args.repetitions + 1))[0]
        )
    if args.count_ops:
        from op_count import count_operators

        for name in ("dense", "reference", "ctrlsparse"):
            print(f"  {name}: {sum(count_operators(steps[name]).values())} operators per step")
    rewind = rewinder(steps.values()) if args.same_start else None
    seconds = alternate_many(steps, args.steps, args.repetitions, before_repetition=rewind)
    print(f"{args.model}, batch {len(x)}, {torch.get_num_threads()} threads, {args.repetitions} repetitions")
    for name in [n for n in steps if n != "dense"]:
        ratios = [a / b for a, b in zip(seconds[name], seconds["dense"])]
        milliseconds = 1e3 * statistics.median(seconds[name])
        print(f"  {name:<12} / dense: {spread(ratios)}; {milliseconds:.2f} ms per step")
    print(f"  dense: {1e3 * statistics.median(seconds['dense']):.2f} ms per step")
    for name in [n for n in steps if n not in ("dense", "reference")]:
        head_to_head = [a / b for a, b in zip(seconds[name], seconds["reference"])]
        print(f"  {name} / reference: {spread(head_to_head)}")
    if "reference fused" in steps:
        same_kernel = [a / b for a, b in zip(seconds["ctrlsparse"], seconds["reference fused"])]
        print(f"  ctrlsparse / reference fused: {spread(same_kernel)}")
    if "dense compiled" in steps:
        for name in ("compile step", "ctrlsparse"):
            both = [a / b for a, b in zip(seconds[name], seconds["dense compiled"])]
            print(f"  {name} / dense compiled: {spread(both)}")


if __name__ == "__main__":
    main()
