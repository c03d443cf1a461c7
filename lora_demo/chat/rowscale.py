"""A per-row scale on the LoRA branch: base and tuned answers from ONE batch of one static graph.

Each patched PEFT LoRA linear layer computes, while the row scale is active,

    base_layer(x) + lora_B(lora_A(x)) * (scaling * row_scale)        row_scale: (rows, 1, 1)

with row_scale 0 for the base row (the LoRA term is multiplied by exactly 0, so the row is the base layer's output
bit for bit) and the adapter-scale slider's value for the tuned row (1: PEFT's own adapter output). The scale is
one tensor changed in place, so a compiled graph and its CUDA graphs never see a new object when the slider moves.

While inactive (and for `disable_adapter()`, `adapter_names=...`, merged layers) each layer runs PEFT's own forward
unchanged: the held-out loss and the token colouring keep using PEFT's paths.
"""

from __future__ import annotations

import contextlib
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
            plain = type(layer.base_layer) is torch.nn.Linear
            layer.forward = types.MethodType(_row_scaled_linear if plain else _row_scaled_forward, layer)

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
            layer.__dict__.pop("forward", None)
            layer.__dict__.pop("_lora_lab_row_scale", None)
            layer.__dict__.pop("_lora_lab_scale", None)


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
    a, b = self.lora_A[rs.adapter], self.lora_B[rs.adapter]
    # PEFT's vanilla LoRA (the model is in eval mode: dropout is the identity), times the row's scale.
    lora = b(a(x.to(a.weight.dtype)))
    return torch.addcmul(result.to(lora.dtype), lora, self._lora_lab_scale).to(result.dtype)


def _row_scaled_linear(self, x, *args, **kwargs):
    """A plain nn.Linear base: the same sum in as few calls as possible (decoding is call-bound). With the adapter
    in fp32 beside a bf16 base (PEFT's default on the CPU, where tiny bf16 matmuls cost 4x fp32 ones), the sum is
    taken in fp32 and rounded once, as PEFT does."""
    rs = self._lora_lab_row_scale
    if not rs.active or self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    a, b = self.lora_A[rs.adapter].weight, self.lora_B[rs.adapter].weight
    result = F.linear(x, base.weight, base.bias)
    if a.dtype == result.dtype:
        return torch.addcmul(result, F.linear(F.linear(x, a), b), self._lora_lab_scale)
    lora = F.linear(F.linear(x.to(a.dtype), a), b)
    return torch.addcmul(result.to(a.dtype), lora, self._lora_lab_scale).to(result.dtype)
