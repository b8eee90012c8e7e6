"""Shared pytest fixtures. Fixtures for real outside servers live in tests/support/."""

pytest_plugins = ["tests.support.pg", "tests.support.dovecot", "tests.support.postfix",
                  "tests.support.daemon"]
