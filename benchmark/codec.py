"""The codec protocol at its first address: `from benchmark.codec import Codec` keeps working for plug-ins
(it lives in benchmark.codecs.codec)."""

import sys

from benchmark.codecs import codec as _module

sys.modules[__name__] = _module  # the same module object: names, monkeypatches and pickles agree
