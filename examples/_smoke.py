"""Shared by the examples: ``smoke()`` is True under ``MTLKERNELS_SMOKE=1`` or ``--smoke``
(the settings that run in seconds, for CI's ``make examples``)."""

import os
import sys


def smoke() -> bool:
    return os.environ.get("MTLKERNELS_SMOKE") == "1" or "--smoke" in sys.argv
