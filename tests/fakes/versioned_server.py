"""The demo KServe V2 server for deploy tests: a version directory may make it slower.

``python -m tests.fakes.versioned_server --model DIR/model.onnx --name N --port P``: as
``agent.demo.server``, except that a file ``delay_ms`` beside the model (in the version's
directory, read through the ``current`` link when the server starts) delays every inference
by that many milliseconds, the way a heavier version of a model would be slower. The
environment variable ``DELAY_MS`` adds to it: a change of the process's environment that makes
it slower (a config deploy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent.demo.server import DemoModel, serve


class DelayedModel(DemoModel):
    """The demo model, each inference ``delay_s`` slower."""

    def __init__(self, path: str, name: str) -> None:
        super().__init__(path, name)
        delay = Path(path).parent / "delay_ms"
        self.delay_s = float(delay.read_text()) / 1000 if delay.exists() else 0.0
        self.delay_s += float(os.environ.get("DELAY_MS") or 0) / 1000

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        if self.delay_s:
            time.sleep(self.delay_s)
        return super().infer(*args, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="demo")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(DelayedModel(args.model, args.name), "127.0.0.1", args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
