"""A flat ``{name: tensor}`` dict laid out as a plain safetensors file, straight from memory.

What a sealed model directory holds for each shard (``seal_dir`` re-frames a file on disk into
the same layout): every tensor a whole, contiguous entry of its own dtype and shape, plus the
sealedckpt structure of a flat state_dict, so ``unseal-dir`` writes back a plain safetensors
file and ``load_dir`` returns the dict. No file is written here and tensor bytes are never
copied unless a tensor is not contiguous or not on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from ..container.format import default_chunk_log2
from ..errors import UnsupportedTypeError
from . import safetensors as pl
from . import structure as st
from .encode import chunk_aligned_order
from .views import TORCH_TO_ST, byte_view, flat_bytes


@dataclass(frozen=True)
class FlatPlan:
    """A safetensors layout and the contiguous CPU tensors whose bytes follow its header."""

    layout: pl.Layout
    tensors: list[torch.Tensor]

    @property
    def payload_len(self) -> int:
        return self.layout.payload_len

    def segments(self) -> Iterator[memoryview]:
        yield memoryview(self.layout.header)
        for t in self.tensors:
            if t.numel():
                yield byte_view(flat_bytes(t).numpy())


def plan_flat(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> FlatPlan:
    """Lay ``tensors`` out (those of whole-chunk sizes first: ``chunk_aligned_order``);
    ``metadata`` joins the safetensors ``__metadata__`` (its ``sealedckpt.`` keys are reserved)."""
    meta = dict(metadata or {})
    if any(k.startswith("sealedckpt.") for k in meta):
        raise UnsupportedTypeError("__metadata__", "the 'sealedckpt.' metadata keys are reserved")
    specs: list[tuple[str, str, tuple[int, ...], int]] = []
    data: list[torch.Tensor] = []
    for name, t in tensors.items():
        if type(name) is not str or name == "__metadata__":
            raise UnsupportedTypeError(str(name), "a shard's tensor names must be strings (not '__metadata__')")
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type == "meta":
            raise UnsupportedTypeError(name, "a shard holds dense tensors with data (not meta, sparse or other values)")
        dtype = TORCH_TO_ST.get(t.dtype)
        if dtype is None:
            raise UnsupportedTypeError(name, f"dtype {t.dtype} cannot be stored in safetensors")
        c = t.detach().resolve_conj().resolve_neg().to("cpu").contiguous()
        shape = tuple(int(d) for d in c.shape)
        specs.append((name, dtype, shape, c.numel() * c.element_size()))
        data.append(c)
    structure = st.state_dict([(n, d, s) for n, d, s, _ in specs])
    chunk = 1 << default_chunk_log2(sum(spec[3] for spec in specs))
    order = chunk_aligned_order(list(range(len(specs))), chunk, lambda i: specs[i][3])
    layout = pl.build_layout([specs[i] for i in order], {**meta, **pl.structure_metadata(structure)})
    return FlatPlan(layout, [data[i] for i in order])
