"""The `unlearn` command line's parser class (flows/arguments.py builds the parser with it)."""

from __future__ import annotations

import argparse

from unlearning.errors import shown


class Parser(argparse.ArgumentParser):
    """argparse's parser whose errors print as an UnlearnError does: `invalid choice: '4111 1111 …'` and
    `unrecognized arguments: --x alice@example.com` quoted the value whole. Sub-commands' parsers are of
    this class too (argparse makes them of the parent's). One line, as every other refusal: argparse's
    usage (6–9 lines) above the problem buried it; the line says where the usage is instead."""

    def error(self, message: str):
        self.exit(2, f"error: {shown(message)}; see `{self.prog} --help`\n")
