"""`python -m mailrouter ...`: the `mailrouter` command, for where the script is not on
PATH (a venv not activated, a container's python)."""

import sys

from .cli import main

sys.exit(main())
