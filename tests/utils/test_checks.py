"""utils.checks: the one positive-int validator every layer uses."""

import numpy as np
import pytest

from embedrank.errors import InvalidValueError
from embedrank.utils.checks import check_positive_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(255)])
def test_accepts_positive_integers_as_int(value):
    out = check_positive_int(value, "top_k")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, "3", None, np.float32(2)])
def test_refuses_everything_else_naming_the_argument(value):
    with pytest.raises(InvalidValueError, match="top_k must be a positive integer"):
        check_positive_int(value, "top_k")


def test_none_passes_only_when_allowed():
    assert check_positive_int(None, "batch_size", allow_none=True) is None
