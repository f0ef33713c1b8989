"""The daemon and the engine of Differential Inpaint."""

__version__ = "0.1.0"
