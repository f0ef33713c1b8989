"""Differential Inpaint for GIMP 3: the plug-in's support package.

Installed beside `differential-inpaint.py` together with copies of the
shared `protocol/` and `client/` packages and `_vendor/` (pure-Python
msgpack and websockets), which the installer adds.
"""
