"""Shared pytest fixtures. Fixtures for real outside servers live in tests/support/."""

import logging
import os

import pytest

pytest_plugins = ["tests.support.pg", "tests.support.dovecot", "tests.support.postfix",
                  "tests.support.daemon", "tests.support.dnsserver"]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml): two test processes per core, at most 8. Most of a test's
    time is spent waiting for a daemon, a Postfix or a PostgreSQL it started (the load stays
    under 1 on 2 cores with one process), so twice the cores halves the wall time."""
    return min(8, 2 * (os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _mailrouter_log_level():
    """`cli.main()` quiets the "mailrouter" logger for the commands it runs in-process; give
    every test the level it started with, so caplog assertions do not depend on test order."""
    logger = logging.getLogger("mailrouter")
    level = logger.level
    yield
    logger.setLevel(level)
