"""Per-row adapters on the LoRA branch: base and any number of adapters answer from ONE batch of one graph.

Every attached adapter stays in PEFT's LoRA layers (PeftModel.load_adapter, one name each). For the batch, each
LoRA layer (or group of sibling layers that read one input: q/k/v, gate/up) computes, while the row adapters are on,

    base_layer(x) + B_cat((A_cat x) * mask[row])          A_cat: every attached adapter's A stacked (R x in)
                                                          B_cat: their B side by side (block-diagonal per sibling)

where mask[row] holds, over the R stacked rank columns, `scaling(adapter) * scale(row)` for the columns of the
adapter that row asked for and 0 elsewhere. So a row with no adapter gets an exact 0 (the base layer's output bit
for bit), a row with adapter k gets PEFT's own k-adapter output at scale 1, and adapters of different ranks or
target modules mix in one batch with no padding (a layer an adapter does not target has no columns for it). The
masks are tensors changed in place, so a compiled step and its CUDA graph never see a new object when the rows'
adapters or the slider change; only attaching or detaching an adapter rebuilds the stacks (and the graph).

Decoding is bound by the number of kernels, not by bytes: a group costs two small matmuls and a multiply whatever
the number of adapters. While inactive (and for `disable_adapter()`, `adapter_names=...`, merged layers) each layer
runs PEFT's own forward unchanged: the held-out loss and the token colouring keep PEFT's paths.
"""

from __future__ import annotations

import contextlib
import os
import types

import torch
import torch.nn.functional as F


class RowScale:
    """Installs per-row adapters on every LoRA linear layer of a PeftModel (every attached adapter).

    set()/on() take one value per row: (adapter name or None, scale), or a plain float, which means `default`'s
    adapter at that scale (0.0: the base model), as the two-row base/tuned batch spells it."""

    def __init__(self, model, rows: int = 2, adapter: str = "default"):
        self.adapter = adapter  # the adapter a plain float value names
        self.active = False
        self.layers = lora_linear_layers(model)
        if not self.layers:
            raise ValueError("the model has no LoRA linear layers")
        self.rows = rows
        self.adapters = sorted({a for layer in self.layers for a in layer.lora_A})
        if self.adapter not in self.adapters:
            self.adapter = self.adapters[0]
        fuse = os.environ.get("LORA_LAB_CHAT_FUSE", "1").strip() != "0"  # 0: each layer its own LoRA matmuls
        grouped = sibling_groups(model, self.layers) if fuse else []
        in_group = {id(m) for g in grouped for m in g}
        self._masks: dict = {}  # (layout, dtype, device, rows) -> the (rows, 1, R) mask of that column layout
        self.fused = [StackedLora(g) for g in grouped]  # sibling groups (the bench reports how many)
        self.stacks = [*self.fused, *(StackedLora([m]) for m in self.layers if id(m) not in in_group)]
        for layer in self.layers:
            layer._lora_lab_row_scale = self
            plain = type(layer.base_layer) is torch.nn.Linear
            layer.forward = types.MethodType(_row_scaled_linear if plain else _row_scaled_forward, layer)
        self.set([0.0] * rows)

    def _pairs(self, values: list) -> list[tuple[str | None, float]]:
        out = []
        for v in values:
            name, scale = (self.adapter, v) if isinstance(v, (int, float)) else v
            if name is not None and name not in self.adapters:
                raise ValueError(f"adapter {name!r} is not attached (attached: {self.adapters})")
            out.append((None if name is None or float(scale) == 0.0 else name, float(scale)))
        return out

    def set(self, values: list) -> None:
        """Each row's adapter and scale. The masks are filled in place, one tensor per column layout and row count
        (kept: a CUDA graph recorded for that many rows holds it), so a compiled step never sees a new object."""
        pairs, n = self._pairs(values), len(values)
        # Normal tensors, made and filled outside inference mode: a mask first made in a generation's inference
        # mode could not be filled again outside it (and vice versa is allowed).
        with torch.inference_mode(False), torch.no_grad():
            self._fill(pairs, n)
        self.rows = n

    def _fill(self, pairs: list, n: int) -> None:
        filled = {}
        for st in self.stacks:
            key = (st.layout, st.A.dtype, st.A.device, n)
            if key not in filled:
                mask = self._masks.get(key)
                if mask is None:
                    mask = self._masks[key] = torch.zeros(n, 1, st.A.shape[0], dtype=st.A.dtype, device=st.A.device)
                rows = [[scale * scaling if a == name else 0.0 for a, r, scaling in st.layout for _ in range(r)]
                        for name, scale in pairs]  # fmt: skip
                mask.copy_(torch.tensor(rows, dtype=torch.float64).to(mask.dtype).view(n, 1, -1))
                filled[key] = mask
            st.mask = filled[key]

    @contextlib.contextmanager
    def on(self, values: list):
        self.set(values)
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    def remove(self) -> None:
        for layer in self.layers:
            for name in ("forward", "_lora_lab_row_scale", "_lora_lab_stack", "_lora_lab_slice"):
                layer.__dict__.pop(name, None)
        self.fused, self.stacks = [], []


# LoRA layers of one parent module that are called on the same input tensor, in the order they are called.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def sibling_groups(model, layers: list) -> list[list]:
    """Groups of the given LoRA layers that read one input (SIBLINGS under one parent) and can share matmuls: the
    same adapters, input width, A/B dtype and device."""
    wanted = {id(m) for m in layers}
    by_name = {name: m for name, m in model.named_modules() if id(m) in wanted}
    groups = []
    for name in by_name:
        parent, _, leaf = name.rpartition(".")
        for names in SIBLINGS:
            if leaf != names[0]:
                continue
            group = [by_name.get(f"{parent}.{n}" if parent else n) for n in names]
            if any(g is None for g in group) or len({tuple(sorted(g.lora_A)) for g in group}) != 1:
                continue
            a = [g.lora_A[k].weight for g in group for k in g.lora_A]
            b = [g.lora_B[k].weight for g in group for k in g.lora_B]
            if len({w.shape[1] for w in a}) == 1 and len({(w.dtype, w.device) for w in a + b}) == 1:
                groups.append(group)
    return groups


class StackedLora:
    """The LoRA terms of one layer, or of sibling layers reading one input, for every attached adapter, from two
    matmuls: x @ A_cat^T (the adapters' A of every member stacked), times the rows' mask, times the block-diagonal
    B (member m's outputs take only member m's columns; the zeros add exact zeros). The first member called on an
    input computes every member's term and keeps it until each has taken its slice; a member called on another
    input computes afresh, so any calling order stays correct. The stacked factors are copies made here (chat never
    changes them; attaching or detaching an adapter builds new ones)."""

    def __init__(self, layers: list):
        names = sorted(layers[0].lora_A)
        a = [m.lora_A[k].weight.detach() for m in layers for k in names]
        b = [[m.lora_B[k].weight.detach() for k in names] for m in layers]
        self.A = torch.cat(a, 0).contiguous()
        outs = [w[0].shape[0] for w in b]
        self.B = torch.zeros(sum(outs), self.A.shape[0], dtype=b[0][0].dtype, device=b[0][0].device)
        layout, o, c = [], 0, 0
        for m, ws in zip(layers, b, strict=True):
            for k, wb in zip(names, ws, strict=True):
                r = wb.shape[1]
                self.B[o : o + wb.shape[0], c : c + r] = wb
                layout.append((k, r, float(m.scaling[k])))
                c += r
            m._lora_lab_slice = (o, o + ws[0].shape[0])
            o += ws[0].shape[0]
        self.layout = tuple(layout)  # (adapter, rank, scaling) of each column block, in order
        self.mask = None  # the rows' mask (RowScale.set)
        for t in (self.A, self.B):
            with contextlib.suppress(Exception):  # a static address for CUDA graphs (nn-module attributes are)
                torch._dynamo.mark_static_address(t)
        for m in layers:
            m._lora_lab_stack = self
        self.size = len(layers)
        self.x = self.lora = None  # the input being served and its members' LoRA terms
        self.left = 0  # members still to take their slice of it


def _lora_term(self, x):
    """This layer's masked LoRA term for every row (in the adapters' dtype), from its stack's shared matmuls."""
    g = self._lora_lab_stack
    if g.size == 1:
        return F.linear(F.linear(x.to(g.A.dtype), g.A) * g.mask, g.B)
    if g.x is not x:
        g.x, g.left = x, g.size - 1
        g.lora = F.linear(F.linear(x.to(g.A.dtype), g.A) * g.mask, g.B)
    else:
        g.left -= 1
    start, stop = self._lora_lab_slice
    lora = g.lora[..., start:stop]
    if g.left <= 0:
        g.x = g.lora = None
    return lora


def lora_linear_layers(model) -> list:
    """The LoRA layers the row adapters can serve (every attached adapter); [] when any LoRA layer of the model
    cannot be served exactly (an embedding/conv LoRA, DoRA or another variant, a LoRA bias): the caller then keeps
    PEFT's mixed batch (adapter_names per row)."""
    from peft.tuners.lora import LoraLayer

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if getattr(module, "lora_embedding_A", None):
            return []
        if not module.lora_A:
            continue
        for name in module.lora_A:
            a, b = module.lora_A[name], module.lora_B[name]
            if not (isinstance(a, torch.nn.Linear) and isinstance(b, torch.nn.Linear)):
                return []
            if name in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(name):
                return []
            if b.bias is not None:
                return []
        if getattr(module, "fan_in_fan_out", False):
            return []
        layers.append(module)
    return layers


def _peft_path(self, kwargs) -> bool:
    rs = self._lora_lab_row_scale
    return not rs.active or self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None


def _row_scaled_forward(self, x, *args, **kwargs):
    """Any base layer (e.g. bitsandbytes 4-bit): base_layer(x) + the rows' masked LoRA terms."""
    if _peft_path(self, kwargs):
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    lora = _lora_term(self, x)  # (the model is in eval mode: dropout is the identity)
    return (result.to(lora.dtype) + lora).to(result.dtype)


def _row_scaled_linear(self, x, *args, **kwargs):
    """A plain nn.Linear base: the same sum in as few calls as possible (decoding is call-bound). With the adapters
    in fp32 beside a bf16 base (PEFT's default on the CPU, where tiny bf16 matmuls cost 4x fp32 ones), the sum is
    taken in fp32 and rounded once, as PEFT does."""
    if _peft_path(self, kwargs):
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    result = F.linear(x, base.weight, base.bias)
    lora = _lora_term(self, x)
    if lora.dtype == result.dtype:
        return result + lora
    return (result.to(lora.dtype) + lora).to(result.dtype)
