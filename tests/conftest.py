"""Shared pytest fixtures. Fixtures for real outside servers live in tests/support/."""

import logging

import pytest

pytest_plugins = ["tests.support.pg", "tests.support.dovecot", "tests.support.postfix",
                  "tests.support.daemon", "tests.support.dnsserver"]


@pytest.fixture(autouse=True)
def _mailrouter_log_level():
    """`cli.main()` quiets the "mailrouter" logger for the commands it runs in-process; give
    every test the level it started with, so caplog assertions do not depend on test order."""
    logger = logging.getLogger("mailrouter")
    level = logger.level
    yield
    logger.setLevel(level)
