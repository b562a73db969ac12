"""Two of the Synthesizer's resampling steps done by OpenCV when a CPU runs the model for inference.

PyTorch's CPU kernels for a bicubic ``grid_sample`` and a stride-1 ``avg_pool2d`` are slow at these sizes: on a
2-core AVX2 CPU the warp of one 256 px face (4 channels) took 3.0 ms and the familiarity gate's 5 x 5 box blur
1.1 ms; OpenCV's ``remap`` and ``blur`` give the same numbers (within 2e-5 of the range, 0.005 grey levels) in 1.3
and 0.06 ms. The frame loop runs both on every face of every frame.

The torch operation stays the reference: it is what autograd, ONNX export (tracing) and CUDA use, and tests
compare the two (tests/test_opencv_kernels.py). ``eager_cpu_inference`` says when the OpenCV path may be taken.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def eager_cpu_inference(*tensors: torch.Tensor) -> bool:
    """True when every tensor is an FP32 CPU tensor that needs no gradient and nothing is tracing or compiling the
    model: then numpy may stand in for torch without changing what autograd or an exporter would see."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and not (t.requires_grad and torch.is_grad_enabled())
               for t in tensors)


def remap_bicubic(images: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor) -> torch.Tensor:
    """images  # [B, C, H, W] float32; map_x, map_y  # [B, H, W]: the pixel (x, y) each output pixel reads
    -> [B, C, H, W]. Keys' cubic (a = -0.75) with each tap clamped to the border: ``F.grid_sample(mode="bicubic",
    padding_mode="border", align_corners=False)`` at the same points."""
    out = np.empty(images.shape, np.float32)
    maps_x, maps_y = map_x.numpy(), map_y.numpy()
    # Plane by plane, straight from and into the [C, H, W] layout: interleaving the channels for one call and
    # back cost more than the three extra calls (1.3 against 3.0 ms for 4 x 256 x 256).
    for index, image in enumerate(images.numpy()):
        for channel, plane in enumerate(image):
            cv2.remap(plane, maps_x[index], maps_y[index], cv2.INTER_CUBIC, dst=out[index, channel],
                      borderMode=cv2.BORDER_REPLICATE)
    return torch.from_numpy(out)


def box_blur(images: torch.Tensor, size: int) -> torch.Tensor:
    """images  # [B, C, H, W] float32 -> the mean over each pixel's size x size neighbourhood, the border
    replicated: ``F.avg_pool2d(F.pad(images, (p, p, p, p), mode="replicate"), size, stride=1)`` for odd size."""
    out = np.empty(images.shape, np.float32)
    for index, image in enumerate(images.numpy()):
        for channel, plane in enumerate(image):
            cv2.blur(plane, (size, size), dst=out[index, channel], borderType=cv2.BORDER_REPLICATE)
    return torch.from_numpy(out)
