"""Engine tests run offline on the CPU with the built-in tiny models."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _isolated_model_folders(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees the real home folder, HF cache or model folders of this machine."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("DIFFERENTIAL_INPAINT_MODEL_DIRS", raising=False)


@pytest.fixture(scope="session")
def engine():  # noqa: ANN201
    from differential_inpaint.backend.engine import Engine

    return Engine(device="cpu", scan_default_locations=False)


def random_region(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A float32 RGBA region with some structure (gradients plus noise), opaque."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), 0.5 + 0.0 * x], axis=-1)
    rgb = np.clip(rgb + rng.normal(0.0, 0.05, rgb.shape).astype(np.float32), 0.0, 1.0)
    return np.concatenate([rgb, np.ones((height, width, 1), np.float32)], axis=-1).astype(np.float32)
