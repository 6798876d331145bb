"""A checkpoint that cannot be read is called corrupt, by name, and the fallback is named too."""

import warnings

import pytest
import torch

from ctrlsparse.runs import checkpoint as checkpoints
from ctrlsparse.runs.checkpoint import CHECKPOINT, PREVIOUS, CheckpointError


class Foreign:
    """A class no ctrlsparse checkpoint holds: loading it would run code named by the file."""


def _two_checkpoints(run_dir):
    checkpoints.save_checkpoint(run_dir, {"step": 4, "w": torch.ones(2)})
    checkpoints.save_checkpoint(run_dir, {"step": 8, "w": torch.zeros(2)})
    return run_dir / CHECKPOINT, run_dir / PREVIOUS


def _assert_no_unsafe_advice(message):
    assert "weights_only" not in message and "safe_globals" not in message and "trust" not in message


def test_a_truncated_newest_checkpoint_warns_that_it_is_corrupt_and_names_the_fallback(tmp_path):
    newest, previous = _two_checkpoints(tmp_path)
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning) as caught:
        assert checkpoints.load_checkpoint(tmp_path)["step"] == 4
    message = str(caught[0].message)
    assert message.startswith(f"{newest} is corrupt: ")
    assert message.endswith(f"; falling back to {previous}")
    _assert_no_unsafe_advice(message)


def test_a_readable_newest_checkpoint_loads_without_a_warning(tmp_path):
    _two_checkpoints(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoints.load_checkpoint(tmp_path)["step"] == 8


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", "it is empty or ends early"),
        (b"not a checkpoint", "its bytes are not a torch.save file"),
        ("foreign", f"it holds a {__name__}.Foreign object, which no ctrlsparse checkpoint holds"),
    ],
)
def test_when_no_checkpoint_is_readable_each_is_called_corrupt_without_torch_s_advice(tmp_path, content, why):
    newest, previous = _two_checkpoints(tmp_path)
    if content == "foreign":
        torch.save({"schema": checkpoints.SCHEMA_VERSION, "step": 9, "x": Foreign()}, newest)
    else:
        newest.write_bytes(content)
    previous.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError) as raised:
        checkpoints.load_checkpoint(tmp_path)
    message = str(raised.value)
    assert f"{newest} is corrupt: {why}" in message
    assert f"{previous} is corrupt: " in message
    _assert_no_unsafe_advice(message)
