"""The architecture IR: a typed graph of stems, blocks and fuses that carries its weights.

>>> from spnas.ir import parse
>>> arch = parse("BNB(111,d111,d11111,d11)", stem="resnet", seed=0)
>>> arch.encode()
'BNB(111,d111,d11111,d11)'
"""

from spnas.ir.arch import Arch, Stage, Subnet
from spnas.ir.build import add_subnet, build, parse
from spnas.ir.encoding import Code, decode, describe, encode
from spnas.ir.io import load, save
from spnas.ir.nodes import (
    AddSpec,
    BlockSpec,
    FuseSpec,
    ROLES,
    NodeKind,
    OutputSpec,
    StemSpec,
    TensorSpec,
    get_kind,
    list_kinds,
    register_kind,
    unregister_kind,
)
from spnas.ir.torchvision_import import from_torchvision, to_torchvision_state_dict

__all__ = [
    "Arch",
    "Stage",
    "Subnet",
    "Code",
    "decode",
    "encode",
    "describe",
    "parse",
    "build",
    "add_subnet",
    "save",
    "load",
    "from_torchvision",
    "to_torchvision_state_dict",
    "TensorSpec",
    "StemSpec",
    "BlockSpec",
    "FuseSpec",
    "AddSpec",
    "OutputSpec",
    "NodeKind",
    "register_kind",
    "unregister_kind",
    "ROLES",
    "get_kind",
    "list_kinds",
]
