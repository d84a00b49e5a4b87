"""``python -m agent.cli``: the ``vigil`` command (how the agent's service unit runs it)."""

import os
import sys

from agent.cli.commands import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
sys.exit(main())
