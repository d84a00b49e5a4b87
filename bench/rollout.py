"""Safe model rollouts (issue 16): one benchmark, a section per part of a deploy.

Each section is a module beside this one (``rollout_<name>.py``) with three functions, listed in
:data:`SECTIONS` (add a line there for a new one):

* ``add_args(parser)``: its options, each prefixed with its name (``--switch-rate``);
* ``run(args) -> dict``: runs it and returns its record, with ``"targets_met"``: ``{name: bool}``
  (empty when it has no target); raises :class:`benchlib.BenchError` when it cannot run;
* ``render(record) -> str``: the record as the lines RESULTS.md quotes.

Sections:

* ``switch``: blue-green traffic switches through a real nginx under a steady client: switch
  time (write + ``nginx -t`` + reload + confirmed) p50/p95 over 20 switches, failed requests.
* ``hash``: hashing a multi-GB model artifact (GB/s warm and cold, SHA-256 against BLAKE2b,
  read sizes) and the cached re-check (time and bytes read).
* ``inplace``: planned downtime per in-place deploy on the demo server, seen by a client asking
  every 10 ms and as Vigil records it (``starting`` to ``up``), over N deploys.
* ``rollback``: a bad deploy's request to the known-good version serving again, seen by the
  client, and Vigil's request-to-rolled-back and time to restore, over N deploys.
* ``bluegreen``: whole blue-green deploys of the demo server through a real nginx under a steady
  client: failed requests over 20 deploys, the stored switch time, the old copy's drain.

Run by hand from the repo root: ``.venv/bin/python bench/rollout.py [--only switch] [--json]``
(every section when ``--only`` is not given). Exit code: 0 targets met, 1 missed, 2 a section
could not run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchlib import BenchError, machine, version

EXIT_OK, EXIT_MISSED, EXIT_ERROR = 0, 1, 2

SECTIONS: dict[str, str] = {
    "switch": "rollout_switch",
    "hash": "rollout_hash",
    "inplace": "rollout_inplace",
    "rollback": "rollout_rollback",
    "bluegreen": "rollout_bluegreen",
}
"""Section name -> the module (in this folder) that runs it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SECTIONS),
        help="run only this section (repeatable); default: all",
    )
    parser.add_argument("--json", action="store_true", help="print the full record as JSON")
    for module in SECTIONS.values():
        importlib.import_module(module).add_args(parser)
    return parser


def main(argv_: Sequence[str] | None = None) -> int:
    """Run the chosen sections; print their tables or one JSON record."""
    args = build_parser().parse_args(argv_)
    names = args.only or list(SECTIONS)
    result: dict[str, Any] = {
        "machine": machine(aiohttp=version("aiohttp")),
        "command": "bench/rollout.py " + " ".join(argv_ if argv_ is not None else sys.argv[1:]),
        "sections": {},
    }
    code = EXIT_OK
    for name in names:
        module = importlib.import_module(SECTIONS[name])
        started = time.monotonic()
        try:
            record = module.run(args)
        except BenchError as exc:
            print(f"section {name} failed: {exc}", file=sys.stderr)
            result["sections"][name] = {"error": str(exc)}
            code = EXIT_ERROR
            continue
        record["took_s"] = round(time.monotonic() - started, 1)
        result["sections"][name] = record
        if code == EXIT_OK and not all(record.get("targets_met", {}).values()):
            code = EXIT_MISSED
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        m = result["machine"]
        print(
            f"{m['cpu_model']}, {m['cpus']} CPUs, {m['os']}, kernel {m['kernel']}, "
            f"Python {m['python']}, tree {m['git_commit']}{' (dirty)' if m['git_dirty'] else ''}"
        )
        for name, record in result["sections"].items():
            print(f"\n== {name} ==")
            if "error" in record:
                print(f"could not run: {record['error']}")
            else:
                print(importlib.import_module(SECTIONS[name]).render(record))
    return code


if __name__ == "__main__":
    sys.exit(main())
