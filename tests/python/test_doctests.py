"""The examples in the package's docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["ndbridge", "ndbridge.errors", "ndbridge.limits", "ndbridge.dtypes", "ndbridge.header",
           "ndbridge.codec", "ndbridge.wire", "ndbridge.pacing", "ndbridge.curve", "ndbridge.acked",
           "ndbridge.net"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
