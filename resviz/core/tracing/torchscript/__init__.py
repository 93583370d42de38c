"""Trace a TorchScript module (``torch.jit.script`` or ``torch.jit.trace``, as ``torch.jit.load``
gives it back) into the same :class:`~resviz.core.tracing.eager.Trace` the eager tracer records.

How it works, and why this way:

* The module is never run. Its *non-inlined* method graphs are interpreted node by node in
  Python, so every ``prim::CallMethod`` on a submodule is a module call with its exact path:
  a leaf layer (no children, or a layer with a shape rule) becomes ONE 'module' op, any other
  submodule becomes a :class:`Call` whose graph is interpreted recursively.
* Tensors are not materialised. A traced tensor is a :class:`TracedTensor` (shape, dtype, value
  id); the shapes come from the eager tracer's rule table (``shape_rules.py``), looked up by aten
  op name (``aten.py``). Only ops without a rule run for real, on meta tensors made on the fly,
  and the result is turned back into a :class:`TracedTensor`. Parameters and buffers become meta
  copies, made only when an op without a rule needs them; graph constants (and sizes turned into tensors by
  ``prim::NumToTensor`` in traced graphs) stay real CPU tensors, so size arithmetic stays exact.
* A leaf layer's hyper-parameters come from the module's constants (scripted modules keep
  ``in_channels``, ``stride``, ...) or, for traced modules that keep none, from the constant
  arguments of the aten op in the layer's graph (``aten::_convolution``, ``aten::max_pool2d``...)
  and its weight's shape. With them the layer gets the eager tracer's shape rule and messages;
  without them its inlined graph is interpreted quietly (recording nothing inside it).
* Functions of the torch library called from a non-leaf graph (``F.batch_norm``, ``F.dropout``)
  are ONE 'function' op, as under the eager tracer's function mode; a user's own TorchScript
  function is interpreted in place, its ops recorded one by one.
* At a residual add whose operands disagree the mismatch is recorded and tracing goes on with the
  residual branch's shape, exactly as the eager tracer does; a ``raise`` in the model's own code
  (a shape check) and any op that cannot be evaluated end the trace with a :class:`ShapeError`.

The module is analysed in eval mode whatever its ``training`` flag says, and it is not modified
(attributes a forward assigns are kept in an overlay).

The package, by the seams of that work:

* ``api.py``: :func:`trace_script_module`, the entry point;
* ``interp.py``: the interpreter loop: prim nodes, control flow, module and function calls;
* ``graphs.py``: TorchScript graphs compiled once into node lists;
* ``recording.py``: aten ops recorded through the trace builder;
* ``aten.py``: one aten op evaluated: aten-level shape rules, else meta tensors;
* ``leaves.py``: submodules, and leaf layers as one op each;
* ``layers.py``: a layer's shape rule and hyper-parameters from what an archive keeps;
* ``pyops.py``: TorchScript's Python-level operators (sizes, lists, numbers);
* ``common.py``: the traced tensor and what every part shares.

Why an interpreter and not torch's converter to an ExportedProgram (which would let the
torch.export front-end read TorchScript too): ``benchmarks/ts_to_export.py`` runs
``torch._export.converter.TS2EPConverter`` (torch 2.13) on the 15 TorchScript cases of the tests.
It converts 12 and the report built from 11 of those equals the interpreter's, but it fails where
resviz matters most: it runs the model, so a broken network (a residual add whose shapes disagree)
cannot be converted (2 of the 3 broken cases fail), nor can an archive loaded on the meta device;
it specialises control flow at the sample input, so a model's own shape check (``raise`` on a
wrong channel count) is dropped and a later layer is blamed instead; it is a private API
(``torch._export``); and it takes 0.05–4 s per model where interpretation takes 1–100 ms. The
interpreter stays: it is the sturdier path, and it reads TorchScript's graph internals in
``graphs.py``, ``layers.py`` and ``leaves.py`` only.

``exported.py`` builds on the same machinery (traced tensors, aten evaluation, layer
attributes); the names it uses are exported here. Every front-end records through
:class:`~resviz.core.tracing.builder.TraceBuilder`.
"""

from __future__ import annotations

from ..shape_rules import leaf_macs  # shared with the eager tracer; imported from here by exported.py
from .api import trace_script_module
from .aten import aten_eval

# exported.py follows exported graphs with the same traced tensors.
from .common import TENSOR_TYPES, TracedTensor, shape_of
from .layers import LAYER_CALL_OPS, hyper_from_aten, hyper_object, module_rule_by_name

__all__ = [
    "trace_script_module", "aten_eval", "module_rule_by_name", "leaf_macs", "hyper_object",
    "hyper_from_aten", "LAYER_CALL_OPS", "TracedTensor", "TENSOR_TYPES", "shape_of",
]  # fmt: skip
