"""The seed pipeline's math after the window, in torch, shared by the MONAI and TorchIO contenders.

The LINEAR lung window's bounds for the libraries' range rescaling, then a per-voxel function
for what neither library has: the 8-bit quantization, the blue->red LUT and BT.601 full-range
YCbCr (float32 matmul). Imports only torch, so neither contender pays for the other's library.
"""

import torch

LEVEL, WIDTH = -600.0, 1500.0
LOWER, UPPER = LEVEL - 0.5 - (WIDTH - 1) / 2, LEVEL - 0.5 + (WIDTH - 1) / 2  # LINEAR: (x - LOWER) / (w - 1)

RAMP = torch.arange(256, dtype=torch.float32)
LUT = torch.stack([RAMP, torch.zeros(256), 255 - RAMP], dim=1) / 255  # blue -> red, RGB
KR, KB = 0.299, 0.114
KG = 1 - KR - KB
YCBCR = torch.tensor(
    [
        [KR, KG, KB],
        [-KR / (2 * (1 - KB)), -KG / (2 * (1 - KB)), 0.5],
        [0.5, -KG / (2 * (1 - KR)), -KB / (2 * (1 - KR))],
    ],
    dtype=torch.float32,
)
OFFSET = torch.tensor([0.0, 0.5, 0.5])


def lut_and_color(image):
    """(1, x, y, z) in [0, 1] -> (3, x, y, z) channels Y, Cb, Cr (BT.601 full range)."""
    index = torch.round(image[0] * 255).long()  # round half to even
    rgb = LUT[index]  # x, y, z, 3
    ycbcr = rgb @ YCBCR.T + OFFSET
    return ycbcr.permute(3, 0, 1, 2)
