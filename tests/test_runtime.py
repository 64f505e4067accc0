"""embedrank.runtime: the token budget that max_tokens_per_batch="auto" resolves to, per provider."""

from __future__ import annotations

import pytest

from embedrank.runtime import CPU, CPU_MAX_TOKENS_PER_BATCH, CUDA, token_budget


def test_auto_is_a_cap_on_cpu_and_none_on_cuda():
    assert token_budget("auto", CPU) == CPU_MAX_TOKENS_PER_BATCH == 1024
    assert token_budget("auto", CUDA) is None


@pytest.mark.parametrize("value", [None, 1, 77, 8192])
def test_explicit_values_pass_through(value):
    assert token_budget(value, CPU) == value
    assert token_budget(value, CUDA) == value


@pytest.mark.parametrize("value", [0, -5, 2.5, True, False, "AUTO", "1024", b"auto", [1024]])
def test_bad_values_name_the_setting(value):
    with pytest.raises(ValueError, match=r"max_tokens_per_batch must be a positive integer, None or \"auto\""):
        token_budget(value, CPU)
