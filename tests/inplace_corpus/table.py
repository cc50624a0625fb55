"""Prints the corpus's recall/precision table (markdown) for the README.

Run from the repository root: ``python -m tests.inplace_corpus.table``.
"""

from __future__ import annotations

from .judge import markdown_table


def main() -> None:
    print(markdown_table(by="family"))
    print()
    print(markdown_table(by="row"))


if __name__ == "__main__":
    main()
