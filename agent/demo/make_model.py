"""Build the demo model: a 2-layer MLP "iris-like" classifier with fixed weights.

Dev-time tool, run as ``python -m agent.demo.make_model OUT``. It needs the ``onnx`` package,
which is a dev dependency only, so runtime code must never import this module; the generated
``agent/demo/model.onnx`` is committed instead. The weights come from a fixed numpy seed, so
rebuilding gives the same numbers (the bytes may differ across onnx versions).

``python -m agent.demo.make_model --versions DIR`` writes the two later versions the demo
deploys (issue 16), committed beside the model: ``model-v2-broken.onnx``, the same network with
other weights (other answers: the canary gate's golden check fails and the deploy rolls back),
and ``model-v3.onnx``, the committed ``model.onnx`` re-exported with another description (other
bytes, so another version, with exactly its weights and answers: the deploy is promoted).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20240601
N_FEATURES = 4
N_HIDDEN = 8
N_CLASSES = 3
# Opset 17 / IR 8 load in every onnxruntime >= 1.17 (the runtime floor in pyproject).
OPSET = 17
IR_VERSION = 8


def build_model(seed: int = SEED) -> onnx.ModelProto:
    """Build the classifier: Gemm -> Relu -> Gemm -> Softmax over a dynamic batch.

    Args:
        seed: Seed for the weights; the default gives the committed model.

    Returns:
        A checked ONNX model.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0.0, 0.5, size=(N_FEATURES, N_HIDDEN)).astype(np.float32)
    b1 = rng.normal(0.0, 0.1, size=(N_HIDDEN,)).astype(np.float32)
    w2 = rng.normal(0.0, 0.5, size=(N_HIDDEN, N_CLASSES)).astype(np.float32)
    b2 = rng.normal(0.0, 0.1, size=(N_CLASSES,)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(a, name)
        for a, name in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["hidden_pre"], name="fc1"),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu"),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "vigil_demo_classifier",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", N_FEATURES])],
        outputs=[
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", N_CLASSES])
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, producer_name="vigil-demo", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = IR_VERSION
    model.doc_string = "Vigil demo: iris-like 4-feature, 3-class MLP with fixed random weights."
    onnx.checker.check_model(model)
    return model


BROKEN_SEED = SEED + 1
"""The broken version's weights: same shapes, other numbers."""


def build_broken() -> onnx.ModelProto:
    """Version 2 of the demo model: other weights, so other answers to the same canary."""
    model = build_model(BROKEN_SEED)
    model.doc_string = "Vigil demo, version 2: deliberately broken (other weights, other answers)."
    return model


def build_reexport(original: Path) -> onnx.ModelProto:
    """Version 3: ``original`` with another description, so other bytes and the same answers
    (its weights are read from the file, not rebuilt, so they are exactly the same)."""
    model = onnx.load_model(original)
    model.doc_string = "Vigil demo, version 3: version 1 re-exported (same weights and answers)."
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> int:
    """Write the demo model to the path given as the only argument, or with ``--versions DIR``
    the later versions into DIR.

    Args:
        argv: Command-line arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The process exit code: 0 on success, 2 on a usage error.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--versions":
        out_dir = Path(args[1])
        for name, model in (
            ("model-v2-broken.onnx", build_broken()),
            ("model-v3.onnx", build_reexport(Path(__file__).with_name("model.onnx"))),
        ):
            onnx.save_model(model, out_dir / name)
            print(f"wrote {out_dir / name} ({(out_dir / name).stat().st_size} bytes)")
        return 0
    if len(args) != 1:
        print("usage: python -m agent.demo.make_model OUT | --versions DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    onnx.save_model(build_model(), out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
