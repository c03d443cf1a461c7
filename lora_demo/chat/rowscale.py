"""A per-row scale on the LoRA branch: base and tuned answers from ONE batch of one static graph.

Each patched PEFT LoRA linear layer computes, while the row scale is active,

    base_layer(x) + lora_B(lora_A(x)) * (scaling * row_scale)        row_scale: (rows, 1, 1)

with row_scale 0 for the base row (the LoRA term is multiplied by exactly 0, so the row is the base layer's output
bit for bit) and the adapter-scale slider's value for the tuned row (1: PEFT's own adapter output). The scale is
one tensor changed in place, so a compiled graph and its CUDA graphs never see a new object when the slider moves.

LoRA layers that read the same input (q/k/v of one attention block, gate/up of one MLP) share their LoRA matmuls
(`FusedLora`): their A factors stacked into one matrix, their B factors into one block-diagonal matrix, so an input
costs two small matmuls instead of two per layer (decoding is bound by the number of kernels, not by bytes). The
base layers' own matmuls are untouched, so the base row stays the base model bit for bit.

While inactive (and for `disable_adapter()`, `adapter_names=...`, merged layers) each layer runs PEFT's own forward
unchanged: the held-out loss and the token colouring keep using PEFT's paths.
"""

from __future__ import annotations

import contextlib
import os
import types

import torch
import torch.nn.functional as F


class RowScale:
    """Installs the per-row scale on every LoRA linear layer of a PeftModel (one adapter)."""

    def __init__(self, model, rows: int = 2, adapter: str = "default"):
        self.adapter = adapter
        self.active = False
        self.layers = lora_linear_layers(model, adapter)
        if not self.layers:
            raise ValueError("the model has no LoRA linear layers")
        lora_dtype = self.layers[0].lora_A[adapter].weight.dtype
        device = self.layers[0].lora_A[adapter].weight.device
        self.rows = rows
        # One (rows, 1, 1) tensor per distinct LoRA scaling (alpha / r; usually one for the whole adapter), holding
        # scaling * row scale, so a layer adds its update with one fused multiply-add.
        self.scales: dict[float, torch.Tensor] = {}
        for layer in self.layers:
            s = float(layer.scaling[adapter])
            if s not in self.scales:
                self.scales[s] = torch.zeros(rows, 1, 1, dtype=lora_dtype, device=device)
            layer._lora_lab_row_scale = self
            layer._lora_lab_scale = self.scales[s]
            layer._lora_lab_fused = None
            plain = type(layer.base_layer) is torch.nn.Linear
            layer.forward = types.MethodType(_row_scaled_linear if plain else _row_scaled_forward, layer)
        fuse = os.environ.get("LORA_LAB_CHAT_FUSE", "1").strip() != "0"  # 0: each layer its own LoRA matmuls
        self.fused = (
            [FusedLora(group, adapter) for group in sibling_groups(model, self.layers, adapter)] if fuse else []
        )

    def set(self, values: list[float]) -> None:
        """The scale of each row (in place: the tensors a compiled graph holds stay the same objects)."""
        if len(values) != self.rows:
            raise ValueError(f"{len(values)} row scales for a batch of {self.rows}")
        for s, t in self.scales.items():
            t.copy_((torch.tensor(values, dtype=torch.float64) * s).to(t.dtype).view(-1, 1, 1))

    @contextlib.contextmanager
    def on(self, values: list[float]):
        self.set(values)
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    def remove(self) -> None:
        for layer in self.layers:
            for name in ("forward", "_lora_lab_row_scale", "_lora_lab_scale", "_lora_lab_fused", "_lora_lab_A",
                         "_lora_lab_B", "_lora_lab_slice"):  # fmt: skip
                layer.__dict__.pop(name, None)
        self.fused = []


# LoRA layers of one parent module that are called on the same input tensor, in the order they are called.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def sibling_groups(model, layers: list, adapter: str = "default") -> list[list]:
    """Groups of the given LoRA layers that read one input (SIBLINGS under one parent) and can share matmuls: the
    same input width, A/B dtype and device."""
    wanted = {id(m) for m in layers}
    by_name = {name: m for name, m in model.named_modules() if id(m) in wanted}
    groups = []
    for name in by_name:
        parent, _, leaf = name.rpartition(".")
        for names in SIBLINGS:
            if leaf != names[0]:
                continue
            group = [by_name.get(f"{parent}.{n}" if parent else n) for n in names]
            if any(g is None for g in group):
                continue
            a = [g.lora_A[adapter].weight for g in group]
            b = [g.lora_B[adapter].weight for g in group]
            if len({w.shape[1] for w in a}) == 1 and len({(w.dtype, w.device) for w in a + b}) == 1:
                groups.append(group)
    return groups


class FusedLora:
    """The LoRA terms of sibling layers (one input) from two matmuls: x @ [A1; A2; ...]^T, then that times the
    block-diagonal [B1 0 ...; 0 B2 ...]^T (the zeros add exact zeros). The first member called on an input computes
    every member's term and keeps it until each has taken its slice; a member called on another input computes
    afresh, so any calling order stays correct. The stacked factors are copies made here (chat never changes them)."""

    def __init__(self, layers: list, adapter: str = "default"):
        a = [m.lora_A[adapter].weight.detach() for m in layers]
        b = [m.lora_B[adapter].weight.detach() for m in layers]
        self.A = torch.cat(a, 0).contiguous()
        self.B = torch.zeros(sum(w.shape[0] for w in b), self.A.shape[0], dtype=b[0].dtype, device=b[0].device)
        o = r = 0
        for m, wa, wb in zip(layers, a, b, strict=True):
            self.B[o : o + wb.shape[0], r : r + wa.shape[0]] = wb
            m._lora_lab_slice = (o, o + wb.shape[0])
            o, r = o + wb.shape[0], r + wa.shape[0]
        for t in (self.A, self.B):
            with contextlib.suppress(Exception):  # a static address for CUDA graphs (nn-module attributes are)
                torch._dynamo.mark_static_address(t)
        for m in layers:
            m._lora_lab_fused, m._lora_lab_A, m._lora_lab_B = self, self.A, self.B
        self.size = len(layers)
        self.x = self.lora = None  # the input being served and its members' LoRA terms
        self.left = 0  # members still to take their slice of it


def _lora_term(self, x, adapter: str, dtype):
    """B(A(x)) of this layer (in the adapter's dtype), from its siblings' shared matmuls when it has siblings."""
    g = self._lora_lab_fused
    if g is None:
        return F.linear(F.linear(x.to(dtype), self.lora_A[adapter].weight), self.lora_B[adapter].weight)
    if g.x is not x:
        g.x, g.left = x, g.size - 1
        g.lora = F.linear(F.linear(x.to(dtype), self._lora_lab_A), self._lora_lab_B)
    else:
        g.left -= 1
    start, stop = self._lora_lab_slice
    lora = g.lora[..., start:stop]
    if g.left <= 0:
        g.x = g.lora = None
    return lora


def lora_linear_layers(model, adapter: str = "default") -> list:
    """The LoRA layers the row scale can serve; [] when any LoRA layer of the model cannot be served exactly
    (an embedding/conv LoRA, DoRA or another variant, a LoRA bias): the caller then keeps PEFT's mixed batch."""
    from peft.tuners.lora import LoraLayer

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if adapter not in getattr(module, "lora_A", {}):
            if adapter in getattr(module, "lora_embedding_A", {}):
                return []
            continue
        a, b = module.lora_A[adapter], module.lora_B[adapter]
        if not (isinstance(a, torch.nn.Linear) and isinstance(b, torch.nn.Linear)):
            return []
        if adapter in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(adapter):
            return []
        if b.bias is not None or getattr(module, "fan_in_fan_out", False):
            return []
        layers.append(module)
    return layers


def _row_scaled_forward(self, x, *args, **kwargs):
    """Any base layer (e.g. bitsandbytes 4-bit): base_layer(x) + B(A(x)) * (scaling * row scale)."""
    rs = self._lora_lab_row_scale
    if not rs.active or self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    # PEFT's vanilla LoRA (the model is in eval mode: dropout is the identity), times the row's scale.
    lora = _lora_term(self, x, rs.adapter, self.lora_A[rs.adapter].weight.dtype)
    return torch.addcmul(result.to(lora.dtype), lora, self._lora_lab_scale).to(result.dtype)


def _row_scaled_linear(self, x, *args, **kwargs):
    """A plain nn.Linear base: the same sum in as few calls as possible (decoding is call-bound). With the adapter
    in fp32 beside a bf16 base (PEFT's default on the CPU, where tiny bf16 matmuls cost 4x fp32 ones), the sum is
    taken in fp32 and rounded once, as PEFT does."""
    rs = self._lora_lab_row_scale
    if not rs.active or self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    dtype = self.lora_A[rs.adapter].weight.dtype
    result = F.linear(x, base.weight, base.bias)
    lora = _lora_term(self, x, rs.adapter, dtype)
    if dtype == result.dtype:
        return torch.addcmul(result, lora, self._lora_lab_scale)
    return torch.addcmul(result.to(dtype), lora, self._lora_lab_scale).to(result.dtype)
