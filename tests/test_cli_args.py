"""Bad arguments to the registry and request commands: a usage error, exit 2, as argparse
gives for any other bad argument, before any file or database is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import RULES
from tests.test_cli import mr

NUMBER = "is not a request number (the N of [#N] in a subject: 1 or more)"
EMPTY = "an empty value filters nothing; give a value or leave the option out"
WHO = "is not an address or a domain (e.g. client@outside.test or outside.test)"


@pytest.mark.parametrize("args, error", [
    # printed nothing and exited 0, as if the registry had nothing with nobody
    (["registry", "history", ""], f"argument ADDRESS|DOMAIN: '' {WHO}"),
    (["registry", "history", "@"], f"argument ADDRESS|DOMAIN: '@' {WHO}"),
    (["registry", "history", "client@"], f"argument ADDRESS|DOMAIN: 'client@' {WHO}"),
    (["registry", "history", "outside.test", "-n", "-2"],
     "argument -n: '-2' is not a count (0 or more; 0: all)"),
    (["registry", "search", "-n", "-3"], "argument -n: '-3' is not a count (0 or more; 0: all)"),
    # listed every message, as if no filter had been given
    (["registry", "search", "--from", ""], f"argument --from: {EMPTY}"),
    (["registry", "search", "--subject", "  "], f"argument --subject: {EMPTY}"),
    # said "no request #-5" (exit 1), as if there might have been one
    (["request", "show", "-5"], f"argument N: '-5' {NUMBER}"),
    (["request", "close", "-1"], f"argument N: '-1' {NUMBER}"),
    (["request", "wait", "0"], f"argument N: '0' {NUMBER}"),
    (["request", "show", "#5"], f"argument N: '#5' {NUMBER}"),
])
def test_a_bad_argument_is_a_usage_error(tmp_path: Path, args: list[str], error: str) -> None:
    """Exit 2 with the command's usage and one line saying what is wrong; nothing on stdout,
    no registry looked at (there is none: a look at it would say so instead)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routing: ['{RULES / '*.yaml'}']\n"
                   f"registry: {{url: 'sqlite+aiosqlite:///{tmp_path / 'registry.db'}'}}\n")
    out = mr(*args, "-c", str(cfg))
    command = " ".join(args[:2]) if args[0] == "registry" else args[0]
    assert (out.returncode, out.stdout) == (2, ""), out
    assert out.stderr.startswith(f"usage: mailrouter {command} "), out.stderr
    assert out.stderr.splitlines()[-1] == f"mailrouter {command}: error: {error}", out.stderr


def test_every_option_with_a_default_says_it_in_its_help() -> None:
    """`registry history --help` said "-n N at most N messages (0: all)" and not that all is
    what it lists without -n; the other -n options state theirs. Every option whose default
    is a value (a count, a text) says "default" in its help."""
    import argparse

    from mailrouter.cli import build_parser

    silent = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif (action.option_strings and action.default is not None
                  and action.default is not False and action.default != argparse.SUPPRESS
                  and "default" not in (action.help or "")):
                silent.append(f"{' '.join(path)} {'/'.join(action.option_strings)}")
    walk(build_parser(), [])
    assert silent == []
