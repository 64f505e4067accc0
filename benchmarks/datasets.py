"""Kept for scripts that `import datasets` from benchmarks/: the module is embedrank.bench.datasets."""

import sys

from embedrank.bench import datasets as _module

sys.modules[__name__] = _module
