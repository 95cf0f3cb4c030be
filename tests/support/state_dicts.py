"""A small random state dict shaped like a segmentor's, shared by the fusion tests."""

import torch


def random_state(seed: int, channels: int = 4, mixed_dtypes: bool = False) -> dict[str, torch.Tensor]:
    """Conv, BatchNorm (statistics and counter) and decode-head entries drawn from ``seed``.

    ``mixed_dtypes`` adds entries checkpoint I/O must carry unchanged: a float16
    parameter, an int32 index buffer and a bool mask.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {
        "backbone.conv.weight": torch.randn(channels, 3, 3, 3, generator=generator),
        "backbone.bn.weight": torch.rand(channels, generator=generator),
        "backbone.bn.bias": torch.randn(channels, generator=generator),
        "backbone.bn.running_mean": torch.randn(channels, generator=generator),
        "backbone.bn.running_var": torch.rand(channels, generator=generator) + 0.1,
        "backbone.bn.num_batches_tracked": torch.randint(1, 100, (), generator=generator),
        "decode_head.conv_seg.weight": torch.randn(19, channels, 1, 1, generator=generator),
        "decode_head.conv_seg.bias": torch.randn(19, generator=generator),
    }
    if mixed_dtypes:
        state.update({
            "backbone.half.weight": torch.randn(5, generator=generator).half(),
            "backbone.pos.relative_index": torch.arange(7, dtype=torch.int32),
            "backbone.mask": torch.tensor([True, False, True]),
        })
    return state
