"""The `unlearn` command line's parser class (flows/arguments.py builds the parser with it)."""

from __future__ import annotations

import argparse

from unlearning.errors import shown

# argparse collects a sub-command's unrecognized arguments and refuses them in the top parser, whose
# prog is plain `unlearn`: the deepest parser that left some notes its prog here for the refusal.
_LEFT_BY = "_unrecognized_by"


class Parser(argparse.ArgumentParser):
    """argparse's parser whose errors print as an UnlearnError does: `invalid choice: '4111 1111 …'` and
    `unrecognized arguments: --x alice@example.com` quoted the value whole. Sub-commands' parsers are of
    this class too (argparse makes them of the parent's). One line, as every other refusal: argparse's
    usage (6–9 lines) above the problem buried it; the line says where the usage is instead, the usage of
    the sub-command that refused (`unlearn forget --help`)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(namespace, _LEFT_BY):
            setattr(namespace, _LEFT_BY, self.prog)
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        prog = vars(namespace).pop(_LEFT_BY, self.prog)
        if extras:
            self._refuse(f"unrecognized arguments: {' '.join(extras)}", prog)
        return namespace

    def error(self, message: str):
        self._refuse(message, self.prog)

    def _refuse(self, message: str, prog: str):
        self.exit(2, f"error: {shown(message)}; see `{prog} --help`\n")
