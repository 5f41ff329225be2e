"""MS-SSIM on RGB (pytorch-msssim, Wang et al. 2003 with the usual 5 scales and 11-px Gaussian window).

Computed in float32 (as CompressAI does; float64 is 7x slower on CPU for a 1e-6 difference) on 8-bit
RGB with data_range 255, per channel, averaged over the three channels (as
pytorch-msssim and CompressAI do). Five scales with an 11-px window need both sides larger than
(11 - 1) x 2^4 = 160 px; for a smaller image MS-SSIM is undefined, so it is NaN with a note, never a
value from fewer scales that would not be comparable.
"""

from __future__ import annotations

import numpy as np

WIN_SIZE = 11
SCALES = 5
MIN_SIDE = (WIN_SIZE - 1) * 2 ** (SCALES - 1) + 1  # 161


def ms_ssim(reference: np.ndarray, reconstruction: np.ndarray) -> tuple[float, str]:
    """(MS-SSIM in [0, 1], note); NaN with the reason when the image is too small."""
    h, w = reference.shape[:2]
    if min(h, w) < MIN_SIDE:
        return float("nan"), f"ms_ssim unavailable: {w}x{h} is smaller than its {MIN_SIDE}-px minimum side"
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    x = torch.from_numpy(np.array(reference, np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.array(reconstruction, np.float32)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        value = _ms_ssim(x, y, data_range=255, size_average=True, win_size=WIN_SIZE)
    return float(value), ""
