"""Checkpoints on disk: written atomically, read as data only (weights_only, trusted targets), and
the tokenizer a checkpoint was trained with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from kgqa.data.tokenizer import CharTokenizer, PretrainedTokenizer, Tokenizer
from kgqa.errors import CheckpointError
from kgqa.files import atomic_output
from kgqa.trusted import trusted_config


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, then rename: a crash mid-write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_output(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = True) -> dict[str, Any]:
        return load_checkpoint(path, map_location)


def load_weights(path: str | Path, map_location="cpu") -> Any:
    """torch.load with weights_only=True (tensors and plain values, no pickled objects); a clear error for
    a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not saved by torch): "
                              f"{type(e).__name__}: {str(e)[:200]}") from None


def load_checkpoint(path, map_location="cpu") -> dict[str, Any]:
    """load_weights, and a run config that names only the project's own targets (kgqa.trusted); a clear
    error for a file that is not a kgqa checkpoint or is untrusted."""
    path = Path(path)
    ckpt = load_weights(path, map_location)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not isinstance(ckpt.get("state_dict"), dict) or "run_config" not in hparams:
        raise CheckpointError(f"{path} is not a kgqa checkpoint (no state_dict or run config)")
    ckpt["hyper_parameters"] = trusted_config(dict(hparams), path)
    return ckpt


def resolve_checkpoint(path: str) -> Path:
    p = Path(path)
    return p / "checkpoints" / "best.ckpt" if p.is_dir() else p


def tokenizer_from_state(state: Any, path: Path) -> Tokenizer:
    """The tokenizer a checkpoint was trained with: its character vocabulary, or the pretrained one it
    names with the characters added in training (so the resized embeddings line up)."""
    state = state if isinstance(state, dict) else {}
    try:
        if is_strings(state.get("vocab")):
            return CharTokenizer(state["vocab"])
        if isinstance(state.get("pretrained"), str) and isinstance(state.get("fingerprint"), str) and is_strings(state.get("added")):
            return PretrainedTokenizer.from_state(state)
    except ValueError as e:  # a ConfigError too: the pretrained folder is gone
        raise CheckpointError(f"{path}: {e}") from None
    raise CheckpointError(f"{path} holds no vocabulary (a kgqa checkpoint keeps its tokenizer's)")


def is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
