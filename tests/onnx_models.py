"""Small ONNX models for the onnx probe's tests, built with the ``onnx`` package (a dev dependency).

Every builder writes a real model file that onnxruntime loads; the weights are fixed, so golden
outputs recorded from one build match the next.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # loads in every onnxruntime >= 1.17, the runtime floor
PRODUCER = "vigil-tests"


def _save(graph: onnx.GraphProto, path: Path, *, opsets: dict[str, int] | None = None) -> Path:
    imports = [helper.make_opsetid(domain, version) for domain, version in (opsets or {}).items()]
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), *imports],
        producer_name=PRODUCER,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def linear(path: Path, scale: float = 1.0) -> Path:
    """``y = x @ w + b`` with x ``[batch, 4]``, y ``[batch, 3]``; ``scale`` changes the weights.

    With the generated input ``[0, .1, .2, .3]`` the largest output is ``y[0, 2]``, and so is
    the largest difference between two scales.
    """
    w = np.arange(12, dtype=np.float32).reshape(4, 3) * np.float32(0.1 * scale)
    b = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return _save(graph, path)


def slow(path: Path, size: int = 256, depth: int = 12) -> Path:
    """A chain of ``depth`` ``size``x``size`` MatMuls: milliseconds per run, not microseconds.

    The weight is the identity, so values stay bounded however long the chain.
    """
    eye = numpy_helper.from_array(np.eye(size, dtype=np.float32), "eye")
    names = ["x"] + [f"h{i}" for i in range(depth - 1)] + ["y"]
    nodes = [helper.make_node("MatMul", [a, "eye"], [b]) for a, b in itertools.pairwise(names)]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        [eye],
    )
    return _save(graph, path)


def nan_output(path: Path) -> Path:
    """``y = x / x``: the generated input starts with 0, so ``y[0, 0]`` is NaN."""
    graph = helper.make_graph(
        [helper.make_node("Div", ["x", "x"], ["y"])],
        "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return _save(graph, path)


def allocating(path: Path, floats: int) -> Path:
    """Allocates a ``floats``-element tensor on every run (4 bytes each), then sums it."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "ConstantOfShape",
                ["n"],
                ["big"],
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
            ),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("Add", ["x", "total"], ["y"]),
        ],
        "allocating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([floats], dtype=np.int64), "n")],
    )
    return _save(graph, path)


def typed(path: Path) -> Path:
    """Three inputs of three types (float with a dynamic dim, int64, bool), echoed back."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["f"], ["f_out"]),
            helper.make_node("Identity", ["i"], ["i_out"]),
            helper.make_node("Identity", ["b"], ["b_out"]),
        ],
        "typed",
        [
            helper.make_tensor_value_info("f", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("b", TensorProto.BOOL, [2]),
        ],
        [
            helper.make_tensor_value_info("f_out", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("i_out", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("b_out", TensorProto.BOOL, [2]),
        ],
    )
    return _save(graph, path)
