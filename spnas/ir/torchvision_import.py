"""``from_torchvision``: a torchvision ResNet/ResNeXt (module or state_dict) as an Arch.

The code is inferred from the tensor shapes (block type, groups, base width, where the channels
double) and, when a module is given, the strides and dilations of its convolutions. Users bring
their own weight files; nothing is downloaded. The classifier (``fc``) is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from spnas.errors import ArchError
from spnas.ir.arch import Arch
from spnas.ir.nodes import output_name
from spnas.ir.nodes import BlockSpec, OutputSpec, StemSpec

__all__ = ["from_torchvision", "to_torchvision_state_dict"]

_KEY = re.compile(r"layer(\d+)\.(\d+)\.(.+)")


def from_torchvision(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> Arch:
    """Import a torchvision ResNet/ResNeXt; the compiled backbone reproduces its features."""
    strides: dict[tuple[int, int], tuple[int, int]] = {}
    if isinstance(model_or_state_dict, nn.Module):
        model = model_or_state_dict
        sd = model.state_dict()
        for li in range(1, 5):
            layer = getattr(model, f"layer{li}", None)
            if layer is None:
                continue
            for bi, blk in enumerate(layer):
                conv = blk.conv2 if hasattr(blk, "conv3") else blk.conv1
                strides[(li, bi)] = (conv.stride[0], conv.dilation[0])
    elif isinstance(model_or_state_dict, Mapping):
        sd = dict(model_or_state_dict)
    else:
        raise ArchError(f"from_torchvision: expected an nn.Module or a state_dict, got {type(model_or_state_dict).__name__}")
    if "conv1.weight" not in sd:
        raise ArchError("from_torchvision: no 'conv1.weight'; expected a torchvision ResNet/ResNeXt state_dict")
    blocks: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        m = _KEY.fullmatch(k)
        if m:
            blocks.setdefault((int(m.group(1)), int(m.group(2))), {})[m.group(3)] = v
    if not blocks:
        raise ArchError("from_torchvision: no 'layerN.i.*' tensors; expected a torchvision ResNet/ResNeXt state_dict")

    c1 = sd["conv1.weight"]
    arch = Arch()
    stem = {k: v for k, v in sd.items() if k.startswith(("conv1.", "bn1."))}
    arch.add_node("stem", "stem", StemSpec("resnet", c1.shape[1], c1.shape[0]), tensors=stem)
    prev, n = "stem", 0
    lasts = []
    for li in sorted({li for li, _ in blocks}):
        for bi in sorted(bi for l2, bi in blocks if l2 == li):
            t = blocks[(li, bi)]
            bottleneck = "conv3.weight" in t
            in_ch = t["conv1.weight"].shape[1]
            if bottleneck:
                planes = t["conv3.weight"].shape[0] // 4
                width = t["conv1.weight"].shape[0]
                groups = width // t["conv2.weight"].shape[1]
                base_width = width * 64 // (groups * planes)
            else:
                planes, groups, base_width = t["conv1.weight"].shape[0], 1, 64
            default = 2 if (bi == 0 and li > 1) else 1
            stride, dilation = strides.get((li, bi), (default, 1))
            shortcut = "conv_bn" if "downsample.0.weight" in t else "identity"
            spec = BlockSpec("bottleneck" if bottleneck else "basic", in_ch, planes, stride, groups, base_width, dilation, shortcut)
            nid = f"b{n}"
            try:
                prev = arch.add_node(nid, "block", spec, [prev], tensors=t)
            except ArchError as e:
                raise ArchError(f"from_torchvision: layer{li}.{bi}: {e}") from None
            n += 1
        lasts.append(prev)
    stride = 4
    specs = arch.specs()
    for last in lasts:
        stride = specs[last].stride
        name = output_name(stride)
        arch.add_node(name, "output", OutputSpec(name), [last])
    arch.reserve_ids(n)
    try:
        arch.verify()
    except ArchError as e:
        raise ArchError(f"from_torchvision: {e}") from None
    return arch


def to_torchvision_state_dict(arch: Arch) -> dict[str, torch.Tensor]:
    """The inverse for a serial 4-stage Arch: keys as torchvision's ResNet (no ``fc``)."""
    custom = arch.custom_kinds()
    if custom:
        raise ArchError(f"to_torchvision_state_dict: node kind(s) {custom} have no place in torchvision's ResNet")
    out = {f"{k}": v for k, v in arch.tensors(arch.stem).items()}
    for li, st in enumerate(arch.stages(), start=1):
        if st.subnets:
            raise ArchError("to_torchvision_state_dict: a net with parallel subnets has no torchvision layout")
        for bi, b in enumerate(st.blocks):
            for k, v in arch.tensors(b).items():
                out[f"layer{li}.{bi}.{k}"] = v
    return out
