#!/usr/bin/env python3
"""GIMP 3 plug-in entry point: Filters ▸ Generic ▸ Differential Inpaint…

GIMP runs this file by name; it must live in a folder of the same name in
GIMP's plug-ins folder and be executable, or GIMP skips it without a word.
Install with `differential-inpaint install-plugin gimp`.
"""

import os
import sys

# The support package and its pure-Python msgpack/websockets travel beside
# this file; _vendor goes first so a different system copy cannot shadow them.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(_HERE, "differential_inpaint_gimp", "_vendor"), _HERE]

from differential_inpaint_gimp.plugin import main  # noqa: E402

main()
