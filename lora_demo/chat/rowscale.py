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
import types

import torch
import torch.nn.functional as F

from lora_demo import env


class RowScale:
    """Installs per-row adapters on every LoRA linear layer of a PeftModel (every attached adapter).

    set()/on() take one value per row: (adapter name or None, scale), or a plain float, which means `default`'s
    adapter at that scale (0.0: the base model), as the two-row base/tuned batch spells it."""

    def __init__(self, model, rows: int = 2, adapter: str = "default", bucket: int = 1):
        self.adapter = adapter  # the adapter a plain float value names
        self.active = False
        # Each member's rank columns are allocated in multiples of `bucket` (CUDA: 64), so attaching another
        # adapter usually refills the same tensors in place and a recorded CUDA graph stays valid (refresh()).
        self.bucket = max(1, int(bucket))
        self.layers = lora_linear_layers(model)
        if not self.layers:
            raise ValueError("the model has no LoRA linear layers")
        self.rows = rows
        self.adapters = sorted({a for layer in self.layers for a in layer.lora_A})
        if self.adapter not in self.adapters:
            self.adapter = self.adapters[0]
        fuse = env.chat_fuse()  # 0: each layer its own LoRA matmuls
        grouped = sibling_groups(model, self.layers) if fuse else []
        in_group = {id(m) for g in grouped for m in g}
        self.fused = [StackedLora(g, self.bucket) for g in grouped]  # sibling groups (the bench reports how many)
        self.stacks = [*self.fused, *(StackedLora([m], self.bucket) for m in self.layers if id(m) not in in_group)]
        for layer in self.layers:
            layer._lora_lab_row_scale = self
            plain = type(layer.base_layer) is torch.nn.Linear
            layer.forward = types.MethodType(_row_scaled_linear if plain else _row_scaled_forward, layer)
        self._pairs_now: list = [(None, 0.0)] * rows
        self.set([0.0] * rows)

    def refresh(self, model) -> bool:
        """After an adapter was attached or detached: refill the same stacks in place when the LoRA layers are the
        same and every stack's adapters still fit its columns (True: a recorded step stays valid); False: build a
        new RowScale (the caller does)."""
        layers = lora_linear_layers(model)
        if [id(m) for m in layers] != [id(m) for m in self.layers]:
            return False
        if not all(st.fits() for st in self.stacks):
            return False
        for st in self.stacks:
            st.fill()
        self.adapters = sorted({a for layer in self.layers for a in layer.lora_A})
        if self.adapter not in self.adapters:
            self.adapter = self.adapters[0]
        self._pairs_now = [(n if n in self.adapters else None, s) for n, s in self._pairs_now]
        with torch.inference_mode(False), torch.no_grad():
            for n_rows in {st_n for st in self.stacks for st_n in st.masks}:
                for st in self.stacks:
                    st.mask_for(n_rows, [(None, 0.0)] * n_rows)  # stale columns cleared; set() fills them again
        return True

    def _pairs(self, values: list) -> list[tuple[str | None, float]]:
        out = []
        for v in values:
            name, scale = (self.adapter, v) if isinstance(v, (int, float)) else v
            if name is not None and name not in self.adapters:
                raise ValueError(f"adapter {name!r} is not attached (attached: {self.adapters})")
            out.append((None if name is None or float(scale) == 0.0 else name, float(scale)))
        return out

    def set(self, values: list) -> None:
        """Each row's adapter and scale. Each stack's (rows, 1, R) mask is filled in place (one per row count, kept: a
        CUDA graph recorded for that many rows holds it), so a compiled step never sees a new object."""
        pairs, n = self._pairs(values), len(values)
        # Normal tensors, made and filled outside inference mode: a mask first made in a generation's inference
        # mode could not be filled again outside it.
        with torch.inference_mode(False), torch.no_grad():
            rows_by_layout: dict = {}
            for st in self.stacks:
                st.mask = st.mask_for(n, pairs, rows_by_layout)
                if st.W is not None and not st.shares_base():
                    st.W = st.bias = None
        self.rows, self._pairs_now = n, pairs

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
    same input width, A/B dtype and device (each member has its own columns, so their adapters may differ)."""
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
    input computes afresh, so any calling order stays correct. The factors are copies made here (chat never changes
    them), in columns allocated per member in multiples of `bucket`: fill() rewrites them in place."""

    def __init__(self, layers: list, bucket: int = 1):
        self.layers, self.bucket = layers, bucket
        w = layers[0].lora_A[sorted(layers[0].lora_A)[0]].weight
        self.cap = self._need()  # rank columns per member
        outs = [m.lora_B[sorted(m.lora_B)[0]].weight.shape[0] for m in layers]
        self.A = torch.zeros(self.cap * len(layers), w.shape[1], dtype=w.dtype, device=w.device)
        self.B = torch.zeros(sum(outs), self.cap * len(layers), dtype=w.dtype, device=w.device)
        o = 0
        for m, out in zip(layers, outs, strict=True):
            m._lora_lab_slice = (o, o + out)
            o += out
        self.masks: dict[int, torch.Tensor] = {}  # rows -> (rows, 1, R) mask, kept per batch size
        self.mask = None  # the rows' mask now (RowScale.set)
        for t in (self.A, self.B):
            with contextlib.suppress(Exception):  # a static address for CUDA graphs (nn-module attributes are)
                torch._dynamo.mark_static_address(t)
        for m in layers:
            m._lora_lab_stack = self
        self.size = len(layers)
        self.x = self.lora = None  # the input being served and its members' LoRA terms
        self.left = 0  # members still to take their slice of it
        self.W, self.bias = self._share_base_weights()
        self.fill()

    def _share_base_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """CPU, sibling layers with plain nn.Linear bases of one dtype: their weights (and biases) moved into one
        tensor, each layer's weight now a view of its rows (no copy kept), so the group's base outputs come from ONE
        matmul; the step's many small matmuls cost more in calls than in bytes there (bench/bench_chat.py). (None,
        None) otherwise; CUDA's recorded steps keep the layers' own matmuls."""
        bases = [m.base_layer for m in self.layers]
        if (
            len(bases) < 2
            or any(type(b) is not torch.nn.Linear for b in bases)
            or self.A.device.type != "cpu"
            or len({(b.weight.dtype, b.weight.device, b.weight.shape[1]) for b in bases}) != 1
            or len({b.bias is None for b in bases}) != 1
        ):
            return None, None
        if self.shares_base():  # a RowScale rebuilt after an attach: the layers' weights are one tensor already
            return self.W, self.bias
        with torch.inference_mode(False), torch.no_grad():
            weight = torch.cat([b.weight.detach() for b in bases])
            bias = None if bases[0].bias is None else torch.cat([b.bias.detach() for b in bases])
            shared = (weight, bias)  # one object: shares_base() checks every member holds this very one
            for m, b in zip(self.layers, bases, strict=True):
                o0, o1 = m._lora_lab_slice
                b.weight.data = weight[o0:o1]
                if bias is not None:
                    b.bias.data = bias[o0:o1]
                b._lora_lab_shared = shared
        return weight, bias

    def shares_base(self) -> bool:
        """Whether every member's base weight (and bias) is still its slice of one shared tensor: set up by an
        earlier stack (then this one takes it over as W), and not replaced since (a `.to()` of the model, a safe
        merge), else set() drops W and the members run their own matmuls."""
        shared = getattr(self.layers[0].base_layer, "_lora_lab_shared", None)
        if shared is None:
            return False
        weight, bias = shared
        for m in self.layers:
            b, (o0, o1) = m.base_layer, m._lora_lab_slice
            same = getattr(b, "_lora_lab_shared", None) is shared and _is_slice(b.weight, weight, o0, o1)
            if (
                not same
                or (b.bias is None) != (bias is None)
                or (bias is not None and not _is_slice(b.bias, bias, o0, o1))
            ):
                for k in self.layers:  # a weight was replaced: let go of the shared tensor (it would stay in memory)
                    k.base_layer.__dict__.pop("_lora_lab_shared", None)
                return False
        self.W, self.bias = weight, bias
        return True

    def _need(self) -> int:
        """Rank columns per member for the adapters attached now, rounded up to the bucket."""
        most = max(sum(m.lora_A[k].weight.shape[0] for k in m.lora_A) for m in self.layers)
        return -(-most // self.bucket) * self.bucket

    def fits(self) -> bool:
        return self._need() <= self.cap and all(
            m.lora_A[k].weight.dtype == self.A.dtype for m in self.layers for k in m.lora_A
        )

    @torch.no_grad()
    def fill(self) -> None:
        """Copy every member's adapters into its columns (the rest zero) and note which columns are whose."""
        with torch.inference_mode(False):
            self.A.zero_()
            self.B.zero_()
            layout = []
            for i, m in enumerate(self.layers):
                c, (o0, o1) = i * self.cap, m._lora_lab_slice
                for k in sorted(m.lora_A):
                    a, bw = m.lora_A[k].weight, m.lora_B[k].weight
                    r = a.shape[0]
                    self.A[c : c + r] = a
                    self.B[o0:o1, c : c + r] = bw
                    layout.append((k, c, r, float(m.scaling[k])))
                    c += r
        self.layout = tuple(layout)  # (adapter, first column, rank, scaling) of each column block

    def mask_for(self, n: int, pairs: list, cache: dict | None = None) -> torch.Tensor:
        """This stack's n-row mask, filled for `pairs` (each row's adapter name or None, and scale)."""
        mask = self.masks.get(n)
        if mask is None:
            mask = self.masks[n] = torch.zeros(n, 1, self.A.shape[0], dtype=self.A.dtype, device=self.A.device)
        key = (self.layout, self.A.shape[0], tuple(pairs))
        if cache is None or key not in cache:
            rows = torch.zeros(n, self.A.shape[0], dtype=torch.float64)
            for i, (name, scale) in enumerate(pairs):
                for k, c, r, scaling in self.layout:
                    if k == name:
                        rows[i, c : c + r] = scale * scaling
            if cache is not None:
                cache[key] = rows
        else:
            rows = cache[key]
        mask.copy_(rows.to(mask.dtype).view(n, 1, -1))
        return mask


def _is_slice(t: torch.Tensor, whole: torch.Tensor, o0: int, o1: int) -> bool:
    """Whether t is whole[o0:o1] (the same memory, dtype and shape)."""
    part = whole[o0:o1]
    return t.data_ptr() == part.data_ptr() and t.dtype == whole.dtype and t.shape == part.shape


def _shared_output(self, x):
    """A member of a group whose base weights are one tensor (StackedLora.W): the group's base outputs and LoRA
    terms for every member from one base matmul, one add (rounded once into the base's dtype, as PEFT sums), and
    the LoRA's two matmuls; the first member called on an input computes them, each takes its slice."""
    g = self._lora_lab_stack
    if g.x is not x:
        g.x, g.left = x, g.size - 1
        g.lora = F.linear(x, g.W, g.bias).add_(F.linear(F.linear(x.to(g.A.dtype), g.A) * g.mask, g.B))
    else:
        g.left -= 1
    start, stop = self._lora_lab_slice
    out = g.lora[..., start:stop]
    if g.left <= 0:
        g.x = g.lora = None
    return out


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
    taken in fp32 and rounded once, as PEFT does: one in-place add computes in the promoted dtype and rounds into
    the base's output (the same values as casting up, adding and casting down, in one op instead of three)."""
    if _peft_path(self, kwargs):
        return type(self).forward(self, x, *args, **kwargs)
    if self._lora_lab_stack.W is not None:
        return _shared_output(self, x)
    base = self.base_layer
    return F.linear(x, base.weight, base.bias).add_(_lora_term(self, x))
