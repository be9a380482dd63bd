"""``Arch``: the typed architecture graph that carries its weights.

An Arch wraps a ``networkx.DiGraph`` whose nodes each have a kind and a frozen spec (see
:mod:`spnas.ir.nodes`); the structural queries (:meth:`Arch.main_chain`, :meth:`Arch.stages`,
taps, :meth:`Arch.verify`) read each kind's *role*, never its name. Node ids are stable strings
that survive rewrites; new ids are minted from a counter that never goes back, so an id is never
reused. The weights live in one store keyed ``"node_id/tensor_name"``, read-only from outside
(:attr:`Arch.weights`); tensors are never modified in place, so :meth:`Arch.clone` is a shallow,
cheap copy.

Nothing outside :mod:`spnas.ir` touches the DiGraph. Rewrites edit in the manner of torch.fx:
:meth:`insert_after`, :meth:`replace_all_uses_with`, :meth:`erase`, :meth:`set_spec`,
:meth:`set_tensors` (and the low-level :meth:`add_node`, :meth:`set_input`). After each of the
first four, every stage's output tap is moved to the stage's last output, so a rule that moves a
stride or appends to a stage never rewires taps by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from spnas.errors import ArchError
from spnas.ir.encoding import describe as _describe, encode as _encode
from spnas.ir.nodes import BUILTIN_KINDS, ROLES, TensorSpec, get_kind, list_kinds, output_name

__all__ = ["Arch", "Stage", "Subnet", "output_name"]


@dataclass(frozen=True)
class Subnet:
    """One parallel subnet of a stage: ``x^k = blocks(add(x_prev^k, fuse(x^(k-1))))``."""

    fuse: str
    add: str
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class Stage:
    """A stage of the main chain (``blocks``), its parallel subnets, and its output tap."""

    index: int
    blocks: tuple[str, ...]
    subnets: tuple[Subnet, ...]
    tap: str | None

    @property
    def outputs(self) -> list[str]:
        """``[x^0, x^1, …, x^K]``: the main chain's last block, then each subnet's."""
        return [self.blocks[-1]] + [s.blocks[-1] for s in self.subnets]


class Arch:
    """A backbone architecture as a graph of nodes with specs, carrying its weights.

    Build one with :func:`spnas.ir.parse` or :func:`spnas.ir.from_torchvision`; morphisms return new
    ones. ``arch.weights`` maps ``"node/tensor"`` to a tensor (parameters and BN buffers).
    """

    def __init__(self) -> None:
        self._g = nx.DiGraph()
        self._order = 0  # insertion counter: deterministic tie-breaking in topological order
        self._next_id = 0  # id mint; only ever grows
        self._weights: dict[str, torch.Tensor] = {}

    @property
    def weights(self) -> Mapping[str, torch.Tensor]:
        """``"node/tensor"`` -> tensor, read-only: change tensors with :meth:`set_tensors`."""
        return types.MappingProxyType(self._weights)

    @property
    def next_id(self) -> int:
        """The next number :meth:`mint_id` will try; it only grows (see :meth:`reserve_ids`)."""
        return self._next_id

    # ---------------------------------------------------------------- construction
    def mint_id(self, prefix: str) -> str:
        """A fresh node id ``prefix + N`` that no node of this Arch or its ancestors ever had."""
        while True:
            nid = f"{prefix}{self._next_id}"
            self._next_id += 1
            if nid not in self._g:
                return nid

    def reserve_ids(self, upto: int) -> None:
        """Numbers below ``upto`` are taken (a builder named nodes ``b0..b{upto-1}`` itself)."""
        if isinstance(upto, bool) or not isinstance(upto, int) or upto < 0:
            raise ArchError(f"reserve_ids: expected a non-negative int, got {upto!r}")
        self._next_id = max(self._next_id, upto)

    def add_node(
        self,
        node_id: str,
        kind: str,
        spec: Any,
        inputs: Sequence[str] = (),
        tensors: Mapping[str, torch.Tensor] | None = None,
        gen: torch.Generator | None = None,
    ) -> str:
        """Add a node; its tensors are given, or initialised from ``gen``."""
        k = get_kind(kind)
        if not isinstance(node_id, str) or not node_id.replace("_", "").isalnum() or not node_id[0].isalpha():
            raise ArchError(f"node id: expected letters, digits and '_' starting with a letter, got {node_id!r}")
        if node_id in self._g:
            raise ArchError(f"node {node_id!r} already exists")
        if not isinstance(spec, k.spec_type):
            raise ArchError(f"node {node_id!r}: expected a {k.spec_type.__name__} spec, got {type(spec).__name__}")
        for i in inputs:
            if i not in self._g:
                raise ArchError(f"node {node_id!r}: input {i!r} does not exist")
        self._g.add_node(node_id, kind=kind, spec=spec, inputs=tuple(inputs), order=self._order, meta={})
        self._order += 1
        for port, i in enumerate(inputs):
            self._g.add_edge(i, node_id, port=port)
        if tensors is None:
            tensors = k.init(spec, gen if gen is not None else torch.Generator().manual_seed(0))
        self.set_tensors(node_id, tensors)
        return node_id

    def remove_node(self, node_id: str) -> None:
        """Remove a node no other node uses, with its tensors (low level: taps are not moved)."""
        self._require(node_id)
        if any(True for _ in self._g.successors(node_id)):
            raise ArchError(f"node {node_id!r} still feeds {sorted(self._g.successors(node_id))}; "
                            "replace_all_uses_with() first")
        self._g.remove_node(node_id)
        self._drop_tensors(node_id)

    # ---------------------------------------------------------------- fx-style editing
    def insert_after(
        self,
        node_id: str,
        kind: str,
        spec: Any,
        *,
        tensors: Mapping[str, torch.Tensor] | None = None,
        gen: torch.Generator | None = None,
        prefix: str | None = None,
    ) -> str:
        """A new one-input node fed by ``node_id`` that takes over all of ``node_id``'s uses.

        torch.fx's ``inserting_after`` + ``replace_all_uses_with`` in one call: whatever read
        ``node_id`` (the next block, a fuse, the stage's tap) reads the new node. The id is minted
        from ``prefix`` (default: the kind's name). Returns the new id.
        """
        self._require(node_id)
        k = get_kind(kind)
        if k.arity != 1:
            raise ArchError(f"insert_after: node kind {kind!r} ({k.role}) takes {k.arity} inputs, expected a one-input kind")
        new = self.add_node(self.mint_id(prefix or kind), kind, spec, [node_id], tensors=tensors, gen=gen)
        self._rewire(node_id, new, skip={new})
        self._retap()
        return new

    def replace_all_uses_with(self, old: str, new: str) -> list[str]:
        """Every node that reads ``old`` reads ``new`` instead (``new`` itself excepted, as fx does).

        Returns the rewired users, then moves the stage taps (see the module doc).
        """
        self._require(old)
        self._require(new)
        if old == new:
            return []
        changed = self._rewire(old, new, skip={new} | nx.ancestors(self._g, new))
        self._retap()
        return changed

    def erase(self, node_id: str) -> None:
        """Remove a node nothing reads any more (torch.fx's ``erase_node``), with its tensors."""
        self.remove_node(node_id)
        self._retap()

    def _rewire(self, old: str, new: str, skip: set[str]) -> list[str]:
        changed = []
        for u in self.users(old):
            if u in skip:
                continue
            for port, i in enumerate(self.inputs(u)):
                if i == old:
                    self.set_input(u, port, new)
            changed.append(u)
        return changed

    def _retap(self) -> None:
        """Point each stage's tap (taps in stage order) at the stage's last output, where that is defined.

        Skipped while the graph is mid-edit (shapes do not agree, or stages and taps differ in number).
        """
        taps = self.taps()
        if not taps:
            return
        try:
            stages = self._stage_groups()
        except ArchError:
            return
        if len(stages) != len(taps):
            return
        # taps in stage order: by how much of the main chain lies upstream of what they read (a subnet's
        # end sits after its stage's main blocks and before the next stage's; edits never reorder the chain)
        chain = {b for st in stages for b in st.blocks}  # the main chain, already walked by _stage_groups
        taps.sort(key=lambda t: len((nx.ancestors(self._g, self.inputs(t)[0]) | {self.inputs(t)[0]}) & chain))
        for tap, st in zip(taps, stages):
            if self.inputs(tap)[0] != st.outputs[-1]:
                self.set_input(tap, 0, st.outputs[-1])

    def set_input(self, node_id: str, port: int, new_input: str) -> None:
        """Rewire input ``port`` of ``node_id`` to ``new_input`` (fx's ``replace_input_with``)."""
        self._require(node_id)
        self._require(new_input)
        inputs = list(self._g.nodes[node_id]["inputs"])
        old = inputs[port]
        inputs[port] = new_input
        self._g.nodes[node_id]["inputs"] = tuple(inputs)
        if old not in inputs:
            self._g.remove_edge(old, node_id)
        self._g.add_edge(new_input, node_id, port=port)

    def set_spec(self, node_id: str, spec: Any, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace a node's spec together with its tensors (they must match the new spec)."""
        self._require(node_id)
        k = get_kind(self.kind(node_id))
        if not isinstance(spec, k.spec_type):
            raise ArchError(f"node {node_id!r}: expected a {k.spec_type.__name__} spec, got {type(spec).__name__}")
        self._g.nodes[node_id]["spec"] = spec
        self._drop_tensors(node_id)
        self.set_tensors(node_id, tensors)
        self._retap()  # a stride that moved moves a stage boundary

    def set_tensors(self, node_id: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Set (add or replace) some of a node's tensors by name; :meth:`verify` checks their shapes."""
        self._require(node_id)
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise ArchError(f"node {node_id!r}: tensor {name!r}: expected a torch.Tensor, got {type(t).__name__}")
            self._weights[f"{node_id}/{name}"] = t

    def _drop_tensors(self, node_id: str) -> None:
        prefix = node_id + "/"
        for key in [k for k in self._weights if k.startswith(prefix)]:
            del self._weights[key]

    def _require(self, node_id: str) -> None:
        if node_id not in self._g:
            raise ArchError(f"no node {node_id!r}")

    # ---------------------------------------------------------------- queries
    def __contains__(self, node_id: object) -> bool:
        return node_id in self._g

    def __len__(self) -> int:
        return len(self._g)

    def nodes(self) -> list[str]:
        """Node ids in a deterministic topological order."""
        nodes = self._g.nodes
        return list(nx.lexicographical_topological_sort(self._g, key=lambda n: nodes[n]["order"]))

    def kind(self, node_id: str) -> str:
        self._require(node_id)
        return self._g.nodes[node_id]["kind"]

    def spec(self, node_id: str) -> Any:
        self._require(node_id)
        return self._g.nodes[node_id]["spec"]

    def inputs(self, node_id: str) -> tuple[str, ...]:
        self._require(node_id)
        return self._g.nodes[node_id]["inputs"]

    def users(self, node_id: str) -> list[str]:
        """Nodes that take ``node_id`` as an input, in insertion order."""
        nodes = self._g.nodes
        return sorted(self._g.successors(node_id), key=lambda s: nodes[s]["order"])

    def meta(self, node_id: str) -> dict[str, Any]:
        """Scratch space of a pass (fx's ``node.meta``); not saved, not part of the fingerprint."""
        self._require(node_id)
        return self._g.nodes[node_id]["meta"]

    def tensors(self, node_id: str) -> dict[str, torch.Tensor]:
        prefix = node_id + "/"
        return {k[len(prefix) :]: v for k, v in self._weights.items() if k.startswith(prefix)}

    def role(self, node_id: str) -> str:
        """The node's role (``source``, ``block``, ``fuse``, ``merge``, ``tap``: :data:`spnas.ir.nodes.ROLES`)."""
        return get_kind(self.kind(node_id)).role

    def nodes_of(self, kind: str) -> list[str]:
        """Nodes of one kind, in topological order."""
        return [n for n in self.nodes() if self.kind(n) == kind]

    def nodes_with_role(self, role: str) -> list[str]:
        """Nodes whose kind has ``role``, in topological order."""
        if role not in ROLES:
            raise ArchError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
        return [n for n in self.nodes() if self.role(n) == role]

    def taps(self) -> list[str]:
        """The output taps (nodes of role ``tap``), in graph order."""
        return self.nodes_with_role("tap")

    @property
    def stem(self) -> str:
        stems = self.nodes_with_role("source")
        if len(stems) != 1:
            raise ArchError(f"expected exactly one source (stem) node, got {len(stems)}")
        return stems[0]

    def clone(self) -> Arch:
        """A cheap copy: new graph, same (immutable-by-convention) tensors."""
        new = Arch()
        new._g = self._g.copy()
        for n in new._g.nodes:
            new._g.nodes[n]["meta"] = {}
        new._order = self._order
        new._next_id = self._next_id
        new._weights = dict(self._weights)
        return new

    def with_weights(self, weights: Mapping[str, torch.Tensor]) -> Arch:
        """A copy of this Arch holding ``weights`` (the same keys; shapes are checked by :meth:`verify`)."""
        if set(weights) != set(self._weights):
            diff = sorted(set(weights) ^ set(self._weights))
            raise ArchError(f"with_weights: keys differ from the Arch's, e.g. {diff[0]!r}")
        new = self.clone()
        new._weights = dict(weights)
        return new

    def reinitialized(self, seed: int = 0) -> Arch:
        """A copy of this Arch at a fresh random init (each node's kind draws its tensors from one ``seed``,
        in node order): the same architecture trained from scratch, as a ``parse`` of its code would start."""
        gen = torch.Generator().manual_seed(seed)
        new = self.clone()
        new._weights = {}
        for n in sorted(self._g.nodes, key=lambda n: self._g.nodes[n]["order"]):
            new.set_tensors(n, get_kind(self.kind(n)).init(self.spec(n), gen))
        return new

    # ---------------------------------------------------------------- structure
    def main_chain(self) -> list[str]:
        """The stem's chain of blocks (role ``block``): each feeds exactly one next block of the chain."""
        chain: list[str] = []
        cur = self.stem
        while True:
            nxt = [u for u in self.users(cur) if self.role(u) == "block" and self.inputs(u) == (cur,)]
            if len(nxt) > 1:
                raise ArchError(f"node {cur!r} feeds {len(nxt)} blocks {nxt}; expected one next block on the main chain")
            if not nxt:
                return chain
            cur = nxt[0]
            chain.append(cur)

    def _chain_from(self, start: str) -> list[str]:
        chain = []
        cur = start
        while True:
            nxt = [u for u in self.users(cur) if self.role(u) == "block"]
            if len(nxt) != 1:
                return chain
            cur = nxt[0]
            chain.append(cur)

    def _stage_groups(self) -> list[Stage]:
        """Stages with their subnets; ``tap`` left None. A block coarser than its input starts a stage."""
        chain = self.main_chain()
        if not chain:
            raise ArchError(f"stem {self.stem!r} feeds no block")
        specs = self.specs()
        groups: list[list[str]] = []
        for b in chain:
            if not groups or specs[b].stride > specs[self.inputs(b)[0]].stride:
                groups.append([])
            groups[-1].append(b)
        stages = []
        for i, blocks in enumerate(groups):
            last = blocks[-1]
            subnets: list[Subnet] = []
            while True:
                fuses = [u for u in self.users(last) if self.role(u) == "fuse"]
                if not fuses:
                    break
                if len(fuses) > 1:
                    raise ArchError(f"node {last!r} feeds {len(fuses)} fuse nodes; expected at most one")
                fuse = fuses[0]
                merges = [u for u in self.users(fuse) if self.role(u) == "merge"]
                if len(merges) != 1:
                    raise ArchError(f"fuse {fuse!r}: expected to feed one merge (add) node, got {len(merges)}")
                sub = self._chain_from(merges[0])
                if not sub:
                    raise ArchError(f"merge {merges[0]!r} feeds no block")
                subnets.append(Subnet(fuse, merges[0], tuple(sub)))
                last = sub[-1]
            stages.append(Stage(i, tuple(blocks), tuple(subnets), None))
        return stages

    def stages(self) -> list[Stage]:
        """Split the main chain where a block makes the output coarser; attach each stage's subnets and tap."""
        out = []
        for st in self._stage_groups():
            taps = [u for u in self.users(st.outputs[-1]) if self.role(u) == "tap"]
            out.append(dataclasses.replace(st, tap=taps[0] if taps else None))
        return out

    def outputs(self) -> list[str]:
        """Output tap node ids, in graph order (the same as :meth:`taps`)."""
        return self.taps()

    # ---------------------------------------------------------------- shapes and checks
    def specs(self) -> dict[str, TensorSpec]:
        """Shape inference: the TensorSpec each node outputs. Raises ArchError naming the node."""
        out: dict[str, TensorSpec] = {}
        for n in self.nodes():
            k = get_kind(self.kind(n))
            ins = self.inputs(n)
            if len(ins) != k.arity:
                raise ArchError(f"node {n!r} ({k.name}): expected {k.arity} input(s), got {len(ins)}")
            try:
                out[n] = k.out_spec(self.spec(n), [out[i] for i in ins])
            except ArchError as e:
                raise ArchError(f"node {n!r} ({k.name}): {e}") from None
        return out

    def verify(self) -> None:
        """Check every invariant; raise :class:`ArchError` naming the offending node."""
        if not nx.is_directed_acyclic_graph(self._g):
            cycle = nx.find_cycle(self._g)
            raise ArchError(f"graph has a cycle through node {cycle[0][0]!r}")
        for n in self._g.nodes:
            k = get_kind(self.kind(n))
            if not isinstance(self.spec(n), k.spec_type):
                raise ArchError(f"node {n!r}: expected a {k.spec_type.__name__} spec, got {type(self.spec(n)).__name__}")
            preds = set(self._g.predecessors(n))
            if preds != set(self.inputs(n)):
                raise ArchError(f"node {n!r}: edges {sorted(preds)} disagree with inputs {list(self.inputs(n))}")
        specs = self.specs()
        self._verify_weights()
        chain = self.main_chain()
        if chain and specs[chain[0]].stride != specs[self.stem].stride:
            raise ArchError(f"node {chain[0]!r}: the first block must keep the stem's resolution (stride 1), "
                            f"got output stride {specs[chain[0]].stride} from {specs[self.stem].stride}")
        outs = self.outputs()
        if not outs:
            raise ArchError("the graph has no output node")
        names = [self.spec(o).name for o in outs]
        if len(set(names)) != len(names):
            raise ArchError(f"output names must be unique, got {names}")
        strides = sorted((specs[o].stride, o) for o in outs)
        for (s1, o1), (s2, o2) in zip(strides, strides[1:]):
            if s1 == s2:
                raise ArchError(f"outputs {o1!r} and {o2!r} both have stride {s1}; expected strictly decreasing resolution")
        needed = set()
        for o in outs:
            needed |= nx.ancestors(self._g, o) | {o}
        dead = [n for n in self.nodes() if n not in needed]
        if dead:
            raise ArchError(f"node {dead[0]!r} feeds no output")
        for st in self.stages():
            if st.tap is None:
                raise ArchError(f"stage {st.index + 1} (last node {st.outputs[-1]!r}) has no output tap")

    def _verify_weights(self) -> None:
        seen = set()
        for n in self._g.nodes:
            want = get_kind(self.kind(n)).tensors(self.spec(n))
            for name, shape in want.items():
                key = f"{n}/{name}"
                t = self._weights.get(key)
                if t is None:
                    raise ArchError(f"node {n!r}: missing tensor {name!r}")
                if tuple(t.shape) != tuple(shape):
                    raise ArchError(f"node {n!r}: tensor {name!r} expected shape {tuple(shape)}, got {tuple(t.shape)}")
                seen.add(key)
        extra = sorted(set(self._weights) - seen)
        if extra:
            raise ArchError(f"tensor {extra[0]!r} belongs to no node or to no field of its node's spec")

    def is_valid(self) -> bool:
        try:
            self.verify()
        except ArchError:
            return False
        return True

    # ---------------------------------------------------------------- measures
    def flops(self, size: tuple[int, int] = (224, 224)) -> int:
        """Multiply-accumulates of the backbone for one image of ``size`` (H, W)."""
        return sum(self.node_flops(size).values())

    def node_flops(self, size: tuple[int, int] = (224, 224)) -> dict[str, int]:
        """Per-node multiply-accumulates (the parallel sampler weighs stages by them)."""
        shape: dict[str, tuple[int, int, int]] = {}
        out = {}
        for n in self.nodes():
            k, spec = get_kind(self.kind(n)), self.spec(n)
            ins = [shape[i] for i in self.inputs(n)] or [(getattr(spec, "in_channels", 3), *size)]
            try:
                out[n], shape[n] = k.macs(spec, ins)
            except ArchError as e:
                raise ArchError(f"node {n!r} ({k.name}): {e}") from None
        return out

    def params(self) -> int:
        """Number of trainable parameters (BN running statistics excluded), as nn.Module counts them."""
        total = 0
        for key, t in self._weights.items():
            leaf = key.rsplit(".", 1)[-1]
            if leaf not in ("running_mean", "running_var", "num_batches_tracked"):
                total += t.numel()
        return total

    def fingerprint(self) -> str:
        """A hash of kinds, specs and edges that ignores node ids and weights."""
        g = nx.DiGraph()
        for n in self._g.nodes:
            g.add_node(n, label=f"{self.kind(n)}:{_spec_text(self.spec(n))}")
        for u, v, d in self._g.edges(data=True):
            g.add_edge(u, v, label=str(d["port"]))
        with warnings.catch_warnings():  # networkx >= 3.5 notes that directed hashes changed once
            warnings.simplefilter("ignore", UserWarning)
            h = nx.weisfeiler_lehman_graph_hash(g, node_attr="label", edge_attr="label", iterations=max(3, len(g)))
        return hashlib.sha256(h.encode()).hexdigest()[:16]

    def encode(self) -> str:
        """The paper's code, e.g. ``BNB(111,d111,d11111,d11)``, plus ``(0,2,1,3)`` with subnets.

        Raises :class:`ArchError` for a net the paper's grammar cannot express; :meth:`code` never does.
        """
        return _encode(self)

    def code(self) -> str:
        """The paper's code where the grammar expresses the net, else a custom encoding.

        A custom encoding starts with ``~`` and writes each node of another kind in brackets where
        it sits (``~BB(1[se]1,d1,d1,d1)``); it is a description, not a recipe: the IR file
        (``arch.yaml``) is the truth, and :func:`spnas.ir.decode` refuses it with one line.
        """
        try:
            return _encode(self)
        except ArchError:
            return _describe(self)

    def custom_kinds(self) -> list[str]:
        """Kinds of this net that are not built into spnas (registered by a plugin), sorted."""
        return sorted({self.kind(n) for n in self._g.nodes} - set(BUILTIN_KINDS))

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes())

    def __repr__(self) -> str:
        try:
            code = self.code()
        except ArchError:
            code = "<no code>"
        return f"Arch({code}, nodes={len(self)}, params={self.params():,})"

    # ---------------------------------------------------------------- (de)serialisation of the graph
    def to_dict(self) -> dict[str, Any]:
        """Kinds, specs, inputs and ids as plain data (``arch.yaml``); weights go elsewhere."""
        nodes = []
        for n in self.nodes():
            nodes.append(
                {
                    "id": n,
                    "kind": self.kind(n),
                    "spec": dataclasses.asdict(self.spec(n)),
                    "inputs": list(self.inputs(n)),
                }
            )
        out: dict[str, Any] = {"next_id": self.next_id}
        custom = self.custom_kinds()
        if custom:  # where each plugin kind was defined: named when a loader lacks it
            out["plugins"] = {k: get_kind(k).source for k in custom}
        out["nodes"] = nodes
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], weights: Mapping[str, torch.Tensor], *, where: str = "arch") -> Arch:
        """Rebuild from :meth:`to_dict` output and a weight store; raises ArchError naming the node."""
        if not isinstance(d, Mapping) or not isinstance(d.get("nodes"), list):
            raise ArchError(f"{where}: expected a mapping with a 'nodes' list")
        arch = cls()
        for i, nd in enumerate(d["nodes"]):
            if not isinstance(nd, Mapping) or not {"id", "kind", "spec"} <= set(nd):
                raise ArchError(f"{where}: node #{i}: expected keys id, kind, spec, inputs")
            nid = nd["id"]
            inputs = nd.get("inputs", []) or []
            if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
                raise ArchError(f"{where}: node {str(nid)[:40]!r}: inputs: expected a list of node ids, got {str(inputs)[:60]}")
            plugins = d.get("plugins") if isinstance(d.get("plugins"), Mapping) else {}
            if isinstance(nd["kind"], str) and nd["kind"] not in list_kinds() and nd["kind"] in plugins:
                raise ArchError(f"{where}: node {nid!r} has kind {nd['kind']!r}, which a plugin defines "
                                f"({str(plugins[nd['kind']])[:200]}): load it first (search.plugins, --plugin, "
                                "or spnas.ops.load_plugin)")
            try:
                kind = get_kind(nd["kind"])
                spec_d = nd["spec"] if isinstance(nd["spec"], Mapping) else {}
                spec = kind.spec_from_dict(dict(spec_d))
            except (ArchError, TypeError) as e:
                raise ArchError(f"{where}: node {nid!r}: {e}") from None
            prefix = f"{nid}/"
            tensors = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            try:
                arch.add_node(nid, nd["kind"], spec, inputs, tensors=tensors)
            except ArchError as e:
                raise ArchError(f"{where}: {e}") from None
        extra = sorted(set(weights) - set(arch.weights))
        if extra:
            raise ArchError(f"{where}: tensor {extra[0]!r} belongs to no node")
        nid = d.get("next_id", 0) or 0
        if isinstance(nid, bool) or not isinstance(nid, int) or not 0 <= nid < 10**9:
            raise ArchError(f"{where}: next_id: expected an int in 0..10**9, got {str(nid)[:40]!r}")
        arch.reserve_ids(nid)
        return arch


def _spec_text(spec: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(dataclasses.asdict(spec).items()))
