"""The OpenCV stand-ins for PyTorch's bicubic warp and box blur (reggan/opencv_kernels.py) give PyTorch's numbers, and
are used only where nothing can tell the difference."""

import io

import torch
import torch.nn.functional as F

from reggan.alignment import Aligner
from reggan.checkpoint import load_synthesizer
from reggan.config import load_config, resolve_path
from reggan.opencv_kernels import box_blur, eager_cpu_inference, remap_bicubic


def test_the_opencv_path_is_taken_only_for_eager_cpu_inference():
    plain = torch.rand(2, 3)
    assert eager_cpu_inference(plain)
    assert not eager_cpu_inference(plain, torch.rand(2, 3, requires_grad=True))
    with torch.no_grad():  # no gradient will be asked for, so numpy may stand in
        assert eager_cpu_inference(torch.rand(2, 3, requires_grad=True))
    assert not eager_cpu_inference(plain.half())


def test_an_onnx_export_records_the_torch_operations():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(eager_cpu_inference(x))
            return x * 2

    torch.onnx.export(Recorder(), (torch.rand(2, 3),), io.BytesIO(), dynamo=False)
    assert seen and not any(seen)


def test_remap_matches_grid_sample_bicubic_with_border_padding():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 4, 40, 48, generator=generator)
    # Points inside, between pixels and well outside the image (the border taps are clamped).
    map_x = torch.rand(2, 40, 48, generator=generator) * 60 - 6
    map_y = torch.rand(2, 40, 48, generator=generator) * 52 - 6
    grid = torch.stack([(2 * map_x + 1) / 48 - 1, (2 * map_y + 1) / 40 - 1], dim=-1)
    expected = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    assert torch.allclose(remap_bicubic(images, map_x, map_y), expected, atol=1e-4)


def test_box_blur_matches_a_replicate_padded_average_pool():
    images = torch.rand(2, 1, 30, 30, generator=torch.Generator().manual_seed(1))
    expected = F.avg_pool2d(F.pad(images, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    assert torch.allclose(box_blur(images, 5), expected, atol=1e-6)


def test_the_synthesizer_gives_the_same_faces_either_way(astronaut, astronaut_landmarks):
    """The bundled model's warp and gate on a real face: the inference path against the autograd one (which keeps
    PyTorch's operations because the input asks for a gradient)."""
    synthesizer = load_synthesizer(resolve_path(load_config()["model"]["checkpoint"])).eval()
    aligner = Aligner(synthesizer.resolution)
    crop = aligner.crop(astronaut, aligner.matrix_for(astronaut_landmarks))
    face = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    expression, strength = torch.tensor([1, 3]), torch.tensor([1.0, 0.6])
    with torch.no_grad():
        fast = synthesizer(face, expression, strength)
    slow = synthesizer(face.clone().requires_grad_(True), expression, strength).detach()
    assert (fast - slow).abs().max() * 255 < 0.05
    assert (fast - face).abs().max() * 255 > 20  # and the expression did change the face
