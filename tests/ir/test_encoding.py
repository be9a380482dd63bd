import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spnas.errors import EncodingError, SpnasError
from spnas.ir import decode, parse
from tests.codes import TORCHVISION_CODES

# plus ResNeXt-101 32x4d, which torchvision does not ship
RESNETS = {**TORCHVISION_CODES, "resnext101": "XB(111,d111,d" + "1" * 22 + ",d11)"}
PAPER = [
    "BB(11d,1111,d11111111,d111,1,1111)",
    "BNB(111d1111,d1111,11d,1111,1111)",
    "XB(1111,d1111,d111111111111111111111111,d11,1)",
    "BNB(111,d111,d11111,d11)(0,2,1,3)",
    # the paper's parallel codes, on serial codes of as many stages; (1,0,2,1,2) has a first-stage subnet
    "BNB(111d1111,d1111,11d,1111,1111)(1,0,2,1,2)",
    "BB(11d,1111,d11111111,d111,1,1111)(0,1,2,3,0,0)",
    "XB32x8d(111,d111,d11111,d11)",
    "XB64x4d(111,d111,d11111,d11)",
    "XB1x128d(111,d111,d11111,d11)",
]


@pytest.mark.parametrize("code", list(RESNETS.values()) + PAPER)
def test_roundtrip(code):
    arch = parse(code)
    arch.verify()
    assert arch.encode() == code
    assert str(decode(code)) == code


def test_resnet_block_counts():
    assert sum(map(len, decode(RESNETS["resnet101"]).stages)) == 33
    assert sum(map(len, decode(RESNETS["resnet152"]).stages)) == 50


@pytest.mark.parametrize(
    "code, pos, words",
    [
        ("BB(11,,d1)", 6, "empty stage"),
        ("BB(11,x1)", 6, "got 'x'"),
        ("QB(11)", 0, "block type"),
        ("BB11", 2, "expected '('"),
        ("BB(11,d1", 8, "got the end"),
        ("BB(11,d1)(0)", 9, "2 subnet counts"),
        ("BB(11,d1)(0,0)", 9, "all-zero"),
        ("BB(11,d1)x", 9, "parallel code"),
        ("XB32x4d(11)", 2, "canonical"),
        ("BB4x4d(11)", 2, "only XB"),
        ("BB(dddddd1)", 8, "<= 2048"),
    ],
)
def test_malformed_names_position(code, pos, words):
    with pytest.raises(EncodingError) as e:
        decode(code)
    assert f"position {pos} " in str(e.value)
    assert words in str(e.value)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="BNXd1,()0123x456789 ", max_size=40))
def test_random_strings_raise_only_spnas_errors(s):
    try:
        code = decode(s)
    except SpnasError:
        return
    assert str(code) == s  # anything accepted is canonical


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["BB", "BNB", "XB"]),
    st.lists(st.text(alphabet="1d", min_size=1, max_size=5), min_size=1, max_size=6),
)
def test_random_valid_codes_build(prefix, stages):
    stages = [s for s in stages]
    code = f"{prefix}({','.join(stages)})"
    try:
        decode(code)
    except EncodingError:
        assert "".join(stages).count("d") > 5
        return
    arch = parse(code)
    arch.verify()
    assert arch.encode() == code
