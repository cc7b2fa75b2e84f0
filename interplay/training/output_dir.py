"""The training output directory: new, empty, or an adapter that --overwrite may replace."""

from __future__ import annotations

from pathlib import Path

from interplay.training.errors import TrainingInputError


def check_output(out: Path, overwrite: bool) -> None:
    """An output adapter directory may be written: new, empty, or (with overwrite) an adapter we replace."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise TrainingInputError(f"{out} already exists; pass --overwrite to replace it")
        if out.is_dir() and not (out / "adapter_config.json").exists() and not (out / "loss.json").exists():
            raise TrainingInputError(f"{out} is not an adapter directory; not replacing it")
