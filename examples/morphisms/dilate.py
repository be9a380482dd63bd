"""A user-written morphism: DetNet-style dilation in the deep stages (Li et al., ECCV 2018).

DetNet keeps the resolution of deep stages and enlarges the receptive field with dilated 3x3
convolutions instead. This rule dilates one stride-1 block of the last two stages by 2; the
weights stay, so it is ``approximate``. Name it in a search config after loading the file::

    search:
      plugins: [examples/morphisms/dilate.py]
      morphisms: [expand, swap, widen, add_stage, dilate]
"""

import dataclasses

from spnas.ops import register_morphism


def dilate_sites(arch):
    """Stride-1, undilated residual blocks (kind ``block``) of the last two stages' main chains."""
    stages = arch.stages()
    return [b for st in stages[-2:] for b in st.blocks
            if arch.kind(b) == "block" and arch.spec(b).stride == 1 and arch.spec(b).dilation == 1]


@register_morphism("dilate", exact=False, sites=dilate_sites)
def dilate(arch, site, rng):
    """Give block ``site`` dilation 2 (padding follows, so the output size is unchanged)."""
    spec = arch.spec(site)
    arch.set_spec(site, dataclasses.replace(spec, dilation=2), arch.tensors(site))
    return arch
