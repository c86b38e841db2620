"""The runnable examples in the public operators' docstrings: each shows its full output."""

from __future__ import annotations

import doctest
import importlib

import pytest

PUBLIC_OPERATORS = [
    "operators.asof_join",
    "operators.interval_join",
    "operators.top_users",
    "operators.click_alerts",
    "operators.user_sessions",
]


@pytest.mark.parametrize("module", PUBLIC_OPERATORS)
def test_docstring_examples_run_and_show_their_output(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module} has no example"
    assert result.failed == 0
