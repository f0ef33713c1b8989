"""The daemon and the engine of Differential Inpaint."""

import importlib.metadata

# pyproject.toml's `version` is the only place the version is written down.
__version__ = importlib.metadata.version("differential-inpaint")
