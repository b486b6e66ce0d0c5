"""Entry point for ``mitmdump -s addons/ccmeter.py``: the very addon ``ccmeter run`` uses.

mitmproxy puts this file's folder first on ``sys.path``, where ``import ccmeter`` would find
this file instead of the package; so the folder is taken off the path before importing.
From a source checkout that is not installed, the checkout's root is used.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
if "ccmeter" in sys.modules and not hasattr(sys.modules["ccmeter"], "__path__"):
    del sys.modules["ccmeter"]
try:
    import ccmeter.addon
except ImportError:  # a checkout, not installed
    sys.path.append(os.path.dirname(_here))
    import ccmeter.addon

addons = ccmeter.addon.addons
