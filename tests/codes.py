"""Encodings of torchvision's ResNet/ResNeXt/Wide-ResNet models, shared by the IR and compiler tests."""

TORCHVISION_CODES = {
    "resnet18": "BB(11,d1,d1,d1)",
    "resnet34": "BB(111,d111,d11111,d11)",
    "resnet50": "BNB(111,d111,d11111,d11)",
    "resnet101": "BNB(111,d111,d" + "1" * 22 + ",d11)",
    "resnet152": "BNB(111,d1111111,d" + "1" * 35 + ",d11)",
    "resnext50_32x4d": "XB(111,d111,d11111,d11)",
    "resnext101_32x8d": "XB32x8d(111,d111,d" + "1" * 22 + ",d11)",
    "resnext101_64x4d": "XB64x4d(111,d111,d" + "1" * 22 + ",d11)",
    "wide_resnet50_2": "XB1x128d(111,d111,d11111,d11)",
    "wide_resnet101_2": "XB1x128d(111,d111,d" + "1" * 22 + ",d11)",
}
