"""Which ops of a traced function have no GPU kernel for the dtypes they use, found without a GPU.

TensorFlow's wheels register their GPU kernels even where no GPU is present, and the registry
says, per kernel, the dtypes it accepts (``kernels.get_registered_kernels_for_op``). An op with
no GPU kernel for its dtypes is placed on the host by the soft placement that ``tf.function``
uses: it runs, and its tensors cross the bus each step, without a word. :func:`host_only_ops`
walks a function's graph and every function it calls (gradients and ``tf.custom_gradient``
bodies included) and names each such op with its dtypes.

TensorFlow has no such check of its own (placement is decided when a graph runs on a device),
hence this module. It reads only public protos: ``GraphDef``, ``FunctionDef`` and ``KernelDef``.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from tensorflow.python.framework import kernels

#: kernel device types that can run an op on a GPU (``DEFAULT`` kernels run on any device)
GPU_DEVICE_TYPES = ("GPU", "DEFAULT")

#: ops kept in host memory on every device by design, moving no tensor data: string constants
#: (the messages of assertions, which ``Assert``'s GPU kernel reads from the host)
HOST_BY_DESIGN = (("Const", "dtype", tf.string.as_datatype_enum),)


@functools.lru_cache(maxsize=None)
def _gpu_kernels(op_type: str) -> tuple:
    """The GPU kernels of ``op_type``: each a dict ``{attr: allowed dtype enums}``."""
    found = []
    for kernel in kernels.get_registered_kernels_for_op(op_type).kernel:
        if kernel.device_type in GPU_DEVICE_TYPES:
            found.append({c.name: frozenset(c.allowed_values.list.type)
                          for c in kernel.constraint if c.allowed_values.list.type})
    return tuple(found)


def _dtypes(node) -> dict[str, tuple[int, ...]]:
    """A node's type attributes: ``{name: (dtype enums)}`` (list(type) attributes too)."""
    out = {}
    for name, value in node.attr.items():
        if value.WhichOneof("value") == "type":
            out[name] = (value.type,)
        elif value.WhichOneof("value") == "list" and value.list.type:
            out[name] = tuple(value.list.type)
    return out


def _has_gpu_kernel(op_type: str, dtypes: dict[str, tuple[int, ...]]) -> bool:
    for constraints in _gpu_kernels(op_type):
        if all(set(dtypes.get(name, ())) <= allowed for name, allowed in constraints.items()):
            return True
    return False


def _nodes(graph_def):
    """Every node of ``graph_def`` and of every function in its library."""
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def host_only_ops(*functions) -> list[str]:
    """``"Op(attr=dtype, ...)"`` for each distinct op of ``functions`` without a GPU kernel for
    its dtypes, sorted; empty when every op can run on a GPU.

    Each of ``functions`` is a ``tf.types.experimental.ConcreteFunction``, a traced
    ``tf.function`` with an input signature, or a ``tf.Graph``/``GraphDef``. Calls of the
    graph's own library functions (op types named after a function) are followed, not judged.
    """
    found = set()
    for function in functions:
        if isinstance(function, tf.compat.v1.GraphDef):
            graph_def = function
        elif isinstance(function, tf.Graph):
            graph_def = function.as_graph_def()
        else:
            if not hasattr(function, "graph"):
                function = function.get_concrete_function()
            graph_def = function.graph.as_graph_def()
        library = {f.signature.name for f in graph_def.library.function}
        for node in _nodes(graph_def):
            if node.op in library:
                continue
            dtypes = _dtypes(node)
            if any(node.op == op and dtypes.get(attr) == (dtype,)
                   for op, attr, dtype in HOST_BY_DESIGN):
                continue
            if not _has_gpu_kernel(node.op, dtypes):
                attrs = ", ".join(f"{name}={'/'.join(tf.as_dtype(t).name for t in types)}"
                                  for name, types in sorted(dtypes.items()))
                found.add(f"{node.op}({attrs})")
    return sorted(found)
