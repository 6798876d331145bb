"""What a user watches while ``fit`` trains: a tqdm progress bar and TensorBoard scalars."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm

from ctrlsparse.runs.records import StepRecord


class Progress:
    """A tqdm bar over the run's steps with loss, density and multipliers on a terminal;
    about ten plain lines a run when stderr is not a terminal (a log file, CI)."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool, done: int = 0) -> None:
        self.epochs, self.steps_per_epoch, self.enabled = epochs, steps_per_epoch, enabled
        self.tty = sys.stderr.isatty()
        self._bar = None
        if enabled and self.tty:
            self._bar = tqdm(total=epochs * steps_per_epoch, initial=done, file=sys.stderr, unit="step",
                             dynamic_ncols=True, leave=True)  # fmt: skip

    def update(self, epoch: int, batch: int, step, test_error: float | None = None) -> None:
        if not self.enabled:
            return
        lams = " ".join(f"{name}={value:.3g}" for name, value in step.multipliers.items())
        text = f"loss {step.loss:.3f} density {step.density:.3f} λ {lams}"
        if test_error is not None:
            text += f" test error {test_error:.4f}"
        end_of_epoch = batch == self.steps_per_epoch
        if self._bar is not None:
            self._bar.set_description(f"epoch {epoch}/{self.epochs}", refresh=False)
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(1)
        elif end_of_epoch and (epoch % max(1, self.epochs // 10) == 0 or epoch == self.epochs):
            sys.stderr.write(f"epoch {epoch}/{self.epochs} {text}\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def require_tensorboard() -> None:
    """Raise an ImportError naming the extra to install when TensorBoard cannot be written."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "TensorBoard logging needs the tensorboard package: "
            f"pip install 'ctrlsparse[tensorboard]' ({error})"
        ) from None


class TensorBoard:
    """Writes each logged step's numbers as TensorBoard scalars (``torch.utils.tensorboard``).

    Tags: ``loss``, ``density/model`` and ``density/<layer>``, ``multiplier/<constraint>``,
    ``violation/<constraint>``, ``level/<constraint>``, ``macs/<constraint>`` and, at each
    epoch's end, ``test_error``. A resumed run discards events after its checkpoint
    (``purge_step``), as ``metrics.jsonl`` is cut back.

    Raises:
        ImportError: naming the extra to install, when the ``tensorboard`` package is missing.

    Examples:
        >>> board = TensorBoard("runs/tb")  # doctest: +SKIP
        >>> board.write(record); board.close()  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def write(self, record: StepRecord) -> None:
        scalars = record.scalars()
        if record.test_error is not None:
            scalars["test_error"] = record.test_error
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, record.step)

    def close(self) -> None:
        self.writer.close()
