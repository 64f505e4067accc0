"""Kept for scripts that `import peers` from benchmarks/: the module is embedrank.bench.peers."""

import sys

from embedrank.bench import peers as _module

sys.modules[__name__] = _module
