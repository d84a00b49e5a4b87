"""``vigil probe record-golden``: run an ONNX model once and keep its inputs and outputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cli.exits import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from storage.text import printable


def _read_golden_inputs(path: Path) -> dict[str, object]:
    """``--inputs``: a JSON object of input name -> value, or a golden file holding one.

    Raises:
        ValueError: the file is unreadable or holds something else; the text says what.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, dict) and "outputs" in data and isinstance(data.get("inputs"), dict):
        data = data["inputs"]  # re-recording after a deliberate model change keeps the inputs
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object of input name -> (nested) list")
    return data


def _shape_of(value: object) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def record_golden_command(args: argparse.Namespace) -> int:
    from probes.onnx_client import GoldenInputError, OnnxError, record_golden

    inputs = None
    try:
        if args.inputs is not None:
            inputs = _read_golden_inputs(args.inputs)
        if not args.output.parent.is_dir():
            raise ValueError(f"-o {args.output}: directory {args.output.parent} does not exist")
        if args.timeout <= 0:
            raise ValueError(f"--timeout: expected seconds > 0, got {args.timeout:g}")
        if args.max_memory_mb < 256:
            raise ValueError(f"--max-memory-mb: expected at least 256, got {args.max_memory_mb}")
        golden = record_golden(
            args.model,
            inputs,
            args.output,
            max_memory_mb=args.max_memory_mb,
            timeout_s=args.timeout,
        )
    except (ValueError, GoldenInputError) as exc:
        print(f"vigil: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OnnxError as exc:
        print(f"vigil: {printable(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"recorded {args.output} from {args.model} (sha256 {golden['sha256']})")
    for kind in ("inputs", "outputs"):
        for name, value in golden[kind].items():
            print(f"  {kind[:-1]} {printable(name)}: shape {_shape_of(value)}")
    print(f'use it in [model.canary] as: golden = "{args.output.resolve()}"')
    return EXIT_OK
