import torch
import torch.nn.functional as F

from spnas.ops.weights import identity_conv1x1, replicate, replicate_bn, split, wider_map, zero_bn


def test_wider_map_groups():
    assert wider_map(3, 6).tolist() == [0, 1, 2, 0, 1, 2]
    assert wider_map(4, 8, groups=2).tolist() == [0, 1, 0, 1, 2, 3, 2, 3]


def test_replicate_then_split_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    w1 = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    w2 = torch.randn(3, 6, 1, 1, generator=g, dtype=torch.float64)
    m = wider_map(6, 12)
    y_old = F.conv2d(F.conv2d(x, w1), w2)
    y_new = F.conv2d(F.conv2d(x, replicate(w1, m)), split(w2, m))
    torch.testing.assert_close(y_new, y_old)
    assert split(w2, m).dtype == torch.float64


def test_grouped_split_is_exact():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 8, 4, 4, generator=g, dtype=torch.float64)
    w = torch.randn(8, 4, 3, 3, generator=g, dtype=torch.float64)  # groups=2, 4 in / 4 out per group
    m = wider_map(8, 16, groups=2)
    local = wider_map(4, 8)
    w_new = split(replicate(w, m), local, dim=1)
    y_old = F.conv2d(x, w, groups=2)
    y_new = F.conv2d(x.index_select(1, m), w_new, groups=2)
    torch.testing.assert_close(y_new, y_old.index_select(1, m))


def test_bn_helpers():
    t = {"bn.weight": torch.tensor([1.0, 2.0]), "bn.bias": torch.tensor([3.0, 4.0]), "bn.running_mean": torch.zeros(2),
         "bn.running_var": torch.ones(2), "bn.num_batches_tracked": torch.tensor(5)}
    r = replicate_bn(t, "bn", wider_map(2, 4))
    assert r["bn.weight"].tolist() == [1.0, 2.0, 1.0, 2.0] and int(r["bn.num_batches_tracked"]) == 5
    z = zero_bn(t, "bn")
    assert z["bn.weight"].abs().sum() == 0 and z["bn.bias"].abs().sum() == 0 and t["bn.weight"].sum() == 3


def test_identity_conv():
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(F.conv2d(x, identity_conv1x1(6, 3)), torch.cat([x, x], 1))
