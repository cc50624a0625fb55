"""The examples in public docstrings run and print what they say."""

import doctest

import gradlens._api


def test_api_docstring_examples() -> None:
    result = doctest.testmod(gradlens._api)
    assert result.attempted >= 3
    assert result.failed == 0
