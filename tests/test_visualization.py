# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""internimage.visualization and the tools on top of it: the DCNv3 sampling
locations (the spec's geometry, what the op samples, hand-set offsets
through a module and through a whole backbone to image pixels), the
effective receptive field of conv stacks and of InternImage at
initialisation, clear errors, and tools/vis_sampling.py / vis_erf.py end to
end on a tiny model."""
import os
import re

import numpy as np
import pytest
import torch
from torch import nn

import mmcls_plugin  # noqa: F401
from internimage import InternImage
from internimage.cbnet import CBInternImage
from internimage.visualization import (check_points, conv_to_image,
                                       dcnv3_layers, dcnv3_sampling,
                                       effective_receptive_field,
                                       find_internimage, level_outputs,
                                       level_to_image, load_image,
                                       sample_points, sampling_grid,
                                       select_layers, share_area)
from ops_dcnv3 import dcnv3
from ops_dcnv3.modules import DCNv3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLS_CONFIG = os.path.join(ROOT, 'configs', 'mmpretrain',
                          'internimage-t_8xb128_in1k-224px.py')
#: A four-level InternImage small enough for seconds.
TINY = dict(channels=8, depths=[1, 1, 1, 1], groups=[1, 2, 2, 4],
            drop_path_rate=0.0)


def spec_locations(offset, k_h, k_w, s_h, s_w, p_h, p_w, d_h, d_w, group,
                   scale, remove_center):
    """docs/dcnv3_op.md's formula, loop by loop."""
    n, h_out, w_out, _ = offset.shape
    cx, cy = (d_w * (k_w - 1)) // 2, (d_h * (k_h - 1)) // 2
    points = [(kx, ky) for kx in range(k_w) for ky in range(k_h)
              if not (remove_center and kx == (k_w - 1) // 2
                      and ky == (k_h - 1) // 2)]
    off = offset.reshape(n, h_out, w_out, group, len(points), 2)
    out = torch.empty_like(off)
    for i in range(h_out):
        for j in range(w_out):
            for p, (kx, ky) in enumerate(points):
                out[:, i, j, :, p, 0] = (j * s_w - p_w + cx + scale
                                         * (kx * d_w - cx)
                                         + scale * off[:, i, j, :, p, 0])
                out[:, i, j, :, p, 1] = (i * s_h - p_h + cy + scale
                                         * (ky * d_h - cy)
                                         + scale * off[:, i, j, :, p, 1])
    return out


GRIDS = [  # kernel_h, kernel_w, stride, pad, dilation, scale, remove_center
    (3, 3, (1, 1), (1, 1), (1, 1), 1.0, False),
    (3, 3, (2, 1), (0, 2), (2, 1), 2.0, True),
    (5, 3, (1, 3), (2, 1), (1, 2), 0.5, False),
]


@pytest.mark.parametrize('k_h, k_w, stride, pad, dil, scale, rc', GRIDS)
def test_sampling_grid_is_the_spec(k_h, k_w, stride, pad, dil, scale, rc):
    group, points = 3, k_h * k_w - int(rc)
    offset = torch.randn(2, 4, 5, group * points * 2, dtype=torch.float64)
    got = sampling_grid(offset, k_h, k_w, *stride, *pad, *dil, group, scale,
                        rc)
    want = spec_locations(offset, k_h, k_w, *stride, *pad, *dil, group,
                          scale, rc)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize('k_h, k_w, stride, pad, dil, scale, rc', GRIDS)
def test_sampling_grid_is_where_the_op_samples(k_h, k_w, stride, pad, dil,
                                               scale, rc):
    """On an input whose two channels are the x and y pixel coordinates, the
    op with a one-hot mask returns the location it sampled (bilinear
    interpolation of a linear ramp is exact inside the image)."""
    torch.manual_seed(0)
    height, width, group, points = 9, 11, 2, k_h * k_w - int(rc)
    from ops_dcnv3.reference import output_size
    h_out, w_out = output_size(height, width, k_h, k_w, *stride, *pad, *dil)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64),
                            indexing='ij')
    ramp = torch.stack((xs, ys), -1).repeat(1, 1, group)[None]
    offset = 0.7 * torch.randn(1, h_out, w_out, group * points * 2,
                               dtype=torch.float64)
    loc = sampling_grid(offset, k_h, k_w, *stride, *pad, *dil, group, scale,
                        rc)
    inside = ((loc[..., 0] >= 0) & (loc[..., 0] <= width - 1)
              & (loc[..., 1] >= 0) & (loc[..., 1] <= height - 1))
    assert inside.float().mean() > 0.3
    for p in range(points):
        mask = torch.zeros(1, h_out, w_out, group, points,
                           dtype=torch.float64)
        mask[..., p] = 1
        out = dcnv3(ramp, offset, mask.flatten(-2), k_h, k_w, *stride, *pad,
                    *dil, group, 2, scale, 64, rc)
        sampled = out.reshape(1, h_out, w_out, group, 2)
        keep = inside[..., p]
        torch.testing.assert_close(sampled[keep], loc[..., p, :][keep])


def hand_set(module, shift, logits=None):
    """Offsets (dx, dy) = ``shift(g, p)`` and mask logits ``logits(g, p)``
    for every pixel: zero weights, set biases."""
    group = module.group
    points = module.mask.out_features // group
    with torch.no_grad():
        module.offset.weight.zero_()
        module.mask.weight.zero_()
        module.offset.bias.copy_(torch.tensor(
            [shift(g, p) for g in range(group) for p in range(points)],
            dtype=torch.float32).flatten())
        if logits is not None:
            module.mask.bias.copy_(torch.tensor(
                [logits(g, p) for g in range(group) for p in range(points)]))


def test_module_sampling_with_hand_set_offsets():
    """Every point shifted by a known amount lands where the spec puts it,
    with the module's padding, dilation, offset_scale and remove_center; the
    weights are the softmax of the mask bias per group."""
    m = DCNv3(channels=8, kernel_size=3, pad=2, dilation=2, group=2,
              offset_scale=1.5, remove_center=True).eval()
    hand_set(m, lambda g, p: (0.5 + g, -0.25 * p), lambda g, p: p * (g + 1))
    x = torch.randn(1, 5, 6, 8)
    loc, weights = dcnv3_sampling(m, x)
    assert loc.shape == (1, 5, 6, 2, 8, 2) and weights.shape == (1, 5, 6, 2, 8)
    grid = [(kx, ky) for kx in range(3) for ky in range(3) if (kx, ky)
            != (1, 1)]
    for i, j, g, p in [(0, 0, 0, 0), (4, 5, 1, 7), (2, 3, 1, 4)]:
        kx, ky = grid[p]
        want_x = j - 2 + 2 + 1.5 * ((2 * kx - 2) + 0.5 + g)
        want_y = i - 2 + 2 + 1.5 * ((2 * ky - 2) - 0.25 * p)
        assert loc[0, i, j, g, p].tolist() == pytest.approx([want_x, want_y])
    for g in range(2):
        want = torch.softmax(torch.arange(8.) * (g + 1), 0)
        torch.testing.assert_close(weights[0, 3, 2, g], want)


def test_module_sampling_uses_the_modules_own_prediction():
    """With learned (random) weights the offsets are those of the module's
    dw_conv -> offset layers, which is what its forward feeds the op: the
    op's output from these locations reproduces the module's."""
    torch.manual_seed(0)
    m = DCNv3(channels=8, group=2).eval()
    with torch.no_grad():
        for p in (m.offset.weight, m.offset.bias, m.mask.weight):
            p.normal_(0, 0.3)
    x = torch.randn(1, 6, 7, 8)
    loc, weights = dcnv3_sampling(m, x)
    values = m.input_proj(x).detach()
    # Sample the projected values at the locations by hand (bilinear with
    # zero outside), weight them, and finish as the module does.
    n, h, w, g, p, _ = loc.shape
    v = values.reshape(1, h, w, g, 4).permute(0, 3, 4, 1, 2).reshape(g, 4, h,
                                                                      w)
    grid = torch.stack(((2 * loc[..., 0] + 1) / w - 1,
                        (2 * loc[..., 1] + 1) / h - 1), -1)
    grid = grid[0].permute(2, 0, 1, 3, 4).reshape(g, h * w, p, 2)
    sampled = nn.functional.grid_sample(v, grid, align_corners=False)
    out = (sampled * weights[0].permute(2, 0, 1, 3).reshape(g, 1, h * w, p)
           ).sum(-1).reshape(g, 4, h, w).permute(2, 3, 0, 1).reshape(1, h, w,
                                                                     8)
    torch.testing.assert_close(m.output_proj(out), m(x).detach(), atol=1e-5,
                               rtol=1e-4)


def tiny_backbone(**kwargs):
    torch.manual_seed(0)
    return InternImage(arch=dict(channels=8, depths=[1, 1, 1, 1],
                                 groups=[1, 2, 2, 4]), drop_path_rate=0.0,
                       **kwargs).eval()


@pytest.mark.parametrize('offset_scale, stem_padding', [(1.0, 1), (2.0, 1),
                                                       (1.0, 0)])
def test_backbone_sampling_maps_stages_to_image_pixels(offset_scale,
                                                       stem_padding):
    """Hand-set shifts per stage come back in image pixels: stage l's pixel
    u sits at image pixel 4 * 2**l * u (the stem's two stride-2 3x3 convs
    with padding 1, then a stride-2 downsampling per level), or at
    4 * 2**l * u + 1 when the stem's first conv has no padding."""
    backbone = tiny_backbone(offset_scale=offset_scale)
    backbone.patch_embed.conv1.padding = (stem_padding, stem_padding)
    shift = 1 - stem_padding
    shifts = {0: (0.5, -1.0), 1: (-0.25, 0.75), 2: (1.0, 0.0), 3: (0.0, 2.0)}
    for layer in dcnv3_layers(backbone):
        hand_set(layer.module, lambda g, p, s=shifts[layer.level]: s)
    height, width = 64, 80
    image = torch.randn(1, 3, height, width)
    sizes = [np.array(f.shape[:1:-1]) for f in level_outputs(backbone)(image)]
    points = [(37, 21), (0, 0), (79, 63)]
    result = sample_points(backbone, image, points)
    assert [s.layer.level for s in result] == [0, 1, 2, 3]
    for s in result:
        scale = 4 * 2**s.layer.level
        dx, dy = shifts[s.layer.level]
        for q, (x, y) in enumerate(points):
            u = np.clip(np.round((np.array([x, y]) - shift) / scale), 0,
                        sizes[s.layer.level] - 1)
            assert s.centres[q].tolist() == (scale * u + shift).tolist()
            for p, (kx, ky) in enumerate((kx, ky) for kx in range(3)
                                         for ky in range(3)):
                want = scale * (u + offset_scale * (np.array([kx, ky]) - 1
                                                    + [dx, dy])) + shift
                np.testing.assert_allclose(s.locations[q, :, p],
                                           np.tile(want, (s.weights.shape[1],
                                                          1)), atol=1e-5)
        np.testing.assert_allclose(s.weights, 1 / 9, atol=1e-6)


def test_conv_chain_mapping_is_the_receptive_field_centre():
    """conv_to_image puts output pixel u at the centre of its receptive
    field in the input, for kernels, strides, paddings and dilations that
    differ per axis."""
    convs = [nn.Conv2d(1, 1, (3, 5), stride=(2, 1), padding=(0, 2),
                       dilation=(1, 2), bias=False),
             nn.Conv2d(1, 1, 3, stride=(1, 2), padding=1, bias=False),
             nn.Conv2d(1, 1, (5, 3), stride=2, padding=(1, 0), bias=False)]
    for c in convs:
        nn.init.constant_(c.weight, 1.0)
    scale, shift = conv_to_image(convs)
    x = torch.zeros(1, 1, 61, 67, requires_grad=True)
    y = nn.Sequential(*convs)(x)
    for v, u in [(1, 2), (3, 4)]:
        grad, = torch.autograd.grad(y[0, 0, v, u], x, retain_graph=True)
        rows, cols = torch.nonzero(grad[0, 0], as_tuple=True)
        centre = np.array([(cols.min() + cols.max()).item() / 2,
                           (rows.min() + rows.max()).item() / 2])
        np.testing.assert_allclose(scale * np.array([u, v]) + shift, centre)
    maps = level_to_image(tiny_backbone())
    assert [m[0].tolist() for m in maps] == [[4, 4], [8, 8], [16, 16],
                                             [32, 32]]
    assert all(m[1].tolist() == [0, 0] for m in maps)


def test_cbinternimage_samples_its_lead_backbone():
    torch.manual_seed(0)
    cb = CBInternImage(out_indices=((0, 1, 2, 3), (1, 2, 3)),
                       arch=dict(channels=8, depths=[1, 1, 1, 1],
                                 groups=[1, 2, 2, 4]),
                       drop_path_rate=0.0).eval()
    layers = dcnv3_layers(cb)
    assert [layer.name for layer in layers][:2] == [
        'cb_modules.1.levels.0.blocks.0.dcn',
        'cb_modules.1.levels.1.blocks.0.dcn']
    result = sample_points(cb, torch.randn(1, 3, 32, 32), [(16, 16)], [3])
    assert result[0].centres.tolist() == [[16, 16]]
    assert len(level_outputs(cb)(torch.randn(1, 3, 32, 32))) == 4


# ------------------------------------------------------------------ ERF
class Stack(nn.Module):
    """Convs returning the maps after each of ``taps``."""

    def __init__(self, strides, taps):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(3 if i == 0 else 4, 4, 3, stride=s, padding=1)
            for i, s in enumerate(strides))
        for c in self.convs:  # positive weights: no accidental zeros
            nn.init.uniform_(c.weight, 0.1, 1.0)
            nn.init.zeros_(c.bias)
        self.taps = taps

    def forward(self, x):
        outs = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i in self.taps:
                outs.append(x)
        return outs


def extent(erf):
    rows, cols = torch.nonzero(erf, as_tuple=True)
    return (rows.min().item(), rows.max().item(), cols.min().item(),
            cols.max().item())


def test_erf_of_a_conv_stack_has_its_receptive_field():
    """n stride-1 3x3 convs: exactly the (2n+1)^2 square around the centre;
    a stride-2 conv then a stride-1 one: 7 x 7 around the centre of the
    stride-2 grid."""
    torch.manual_seed(0)
    images = [torch.rand(1, 3, 25, 25) for _ in range(3)]
    erfs = effective_receptive_field(Stack([1, 1, 1], (0, 2)), images)
    assert erfs.shape == (2, 25, 25)
    assert extent(erfs[0]) == (11, 13, 11, 13)
    assert extent(erfs[1]) == (9, 15, 9, 15)
    assert (erfs[1][9:16, 9:16] > 0).all()
    strided = Stack([2, 1], (1, ))
    erfs = effective_receptive_field(strided, images)
    # 13 x 13 output, centre 6 -> image pixel 12; 5..7 -> 9..15.
    assert extent(erfs[0]) == (9, 15, 9, 15)
    # The average over images is the mean of the single-image maps.
    single = [effective_receptive_field(strided, [im]) for im in images]
    torch.testing.assert_close(erfs, sum(single) / 3)


def test_erf_goes_through_a_layernorm():
    """The channels of a LayerNorm's output sum to a constant, so the ERF
    differentiates their positive parts: behind a LayerNorm it is not the
    rounding noise that the gradient of the plain channel sum is."""
    torch.manual_seed(0)
    stack, norm = Stack([1, 1], (1, )), nn.LayerNorm(4)

    def forward(x):
        y = stack(x)[0]
        return [norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)]

    image = torch.rand(1, 3, 15, 15, requires_grad=True)
    erf = effective_receptive_field(forward, [image])[0]
    assert extent(erf) == (5, 9, 5, 9)
    plain, = torch.autograd.grad(forward(image)[0][0, :, 7, 7].sum(), image)
    assert erf.sum() > 1e4 * plain.abs().sum()


def test_erf_of_internimage_at_initialisation():
    """Offsets and masks start at zero, so at initialisation a stage-1 block
    samples the 3x3 grid of the stride-4 map: stem (7 px) plus one pixel of
    the stride-4 grid each side, 15 x 15 around 4 * centre."""
    backbone = tiny_backbone()
    erfs = effective_receptive_field(level_outputs(backbone),
                                     [torch.randn(1, 3, 64, 64)])
    assert erfs.shape == (4, 64, 64)
    c = 4 * (16 // 2)
    assert extent(erfs[0]) == (c - 7, c + 7, c - 7, c + 7)
    assert extent(erfs[1])[1] - extent(erfs[1])[0] > 15


def test_share_area():
    erf = torch.tensor([[4., 1.], [2., 3.]])
    assert share_area(erf, 0.4) == (1, 4.0)
    assert share_area(erf, 0.5) == (2, 3.0)
    assert share_area(erf, 1.0) == (4, 1.0)
    with pytest.raises(ValueError, match='share must be in'):
        share_area(erf, 0)
    with pytest.raises(ValueError, match='zero everywhere'):
        share_area(torch.zeros(2, 2), 0.5)


# --------------------------------------------------------------- errors
def test_bad_input_is_named():
    from mmpretrain.models import ConvNeXt, ImageClassifier
    classifier = ImageClassifier(backbone=dict(type='ConvNeXt', arch='atto'))
    with pytest.raises(ValueError, match='has ConvNeXt, not an InternImage'):
        find_internimage(classifier)
    with pytest.raises(ValueError, match='no backbone'):
        find_internimage(ConvNeXt(arch='atto'))
    with pytest.raises(ValueError, match=r'point \(80, 3\) is outside the '
                       r'image.*x in \[0, 79\]'):
        check_points([(80, 3)], 64, 80)
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match='outside the image'):
        sample_points(backbone, torch.randn(1, 3, 32, 32), [(5, -1)])
    assert [layer.name for layer in select_layers(backbone, [4, 1])] == [
        'levels.3.blocks.0.dcn', 'levels.0.blocks.0.dcn']
    for stages in ([5], [0]):
        with pytest.raises(ValueError, match=f'stage {stages[0]} does not '
                           r'exist: the backbone has stages 1\.\.4'):
            select_layers(backbone, stages)
    with pytest.raises(ValueError, match='block 1 does not exist'):
        select_layers(backbone, [1], block=1)
    with pytest.raises(FileNotFoundError, match='image not found'):
        load_image('/nonexistent.png', (8, 8))
    with pytest.raises(ValueError, match='not an image'):
        load_image(__file__, (8, 8))


def test_load_image_covers_and_centre_crops(tmp_path):
    from PIL import Image
    img = np.zeros((40, 100, 3), np.uint8)
    img[:, 48:52] = 255  # a white bar in the middle
    Image.fromarray(img).save(tmp_path / 'bar.png')
    out = load_image(str(tmp_path / 'bar.png'), (20, 30))
    # 40 x 100 -> 20 x 50 (covers 20 x 30), cropped 10 px each side.
    assert out.shape == (20, 30, 3)
    assert set(np.nonzero(out[10, :, 0] > 128)[0]) <= {13, 14, 15, 16}


# ---------------------------------------------------------------- tools
TINY_CFG = f"""
_base_ = [{CLS_CONFIG!r}]
model = dict(
    backbone=dict(channels=16, depths=[1, 1, 1, 1], groups=[1, 2, 4, 8],
                  drop_path_rate=0.0),
    head=dict(in_channels=128))
"""


@pytest.fixture(scope='module')
def tiny_classifier(tmp_path_factory):
    """A tiny InternImage classifier config and a checkpoint with learned
    -looking (random) offsets and masks."""
    from mmengine.config import Config
    from internimage.complexity import build_from_config
    root = tmp_path_factory.mktemp('vis')
    config = root / 'tiny_cls.py'
    config.write_text(TINY_CFG)
    torch.manual_seed(0)
    model = build_from_config(Config.fromfile(str(config)), device='cpu')
    with torch.no_grad():
        for layer in dcnv3_layers(model.backbone):
            layer.module.offset.weight.normal_(0, 0.5)
            layer.module.offset.bias.normal_(0, 1.0)
            layer.module.mask.weight.normal_(0, 0.5)
    checkpoint = root / 'tiny_cls.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    return str(config), str(checkpoint), model


def test_vis_sampling_end_to_end(tiny_classifier, tool, tmp_path, capsys):
    from PIL import Image
    config, checkpoint, model = tiny_classifier
    out = tmp_path / 'sampling.png'
    vis = tool('vis_sampling')
    vis.main([config, checkpoint, '--shape', '64', '--points', '10,20',
              '40,40', '--out', str(out)])
    printed = capsys.readouterr().out
    assert 'stage 4 (levels.3.blocks.0.dcn, 8 groups x 9 points)' in printed
    with Image.open(out) as png:
        assert png.format == 'PNG' and png.size[0] > 2 * png.size[1]
    # The locations drawn are those of the checkpoint's weights.
    from internimage.visualization import load_image, to_inputs
    image = load_image(vis.sample_image(), (64, 64))
    want = sample_points(model.eval(), to_inputs(model, image),
                         [(10, 20), (40, 40)], [4])[0]
    loaded = vis.load_model(vis.read_config(config), checkpoint)
    got = sample_points(loaded, to_inputs(loaded, image),
                        [(10, 20), (40, 40)], [4])[0]
    np.testing.assert_allclose(got.locations, want.locations, atol=1e-5)
    assert np.abs(got.locations - got.centres[:, None, None]).max() > 40


def test_vis_sampling_errors(tiny_classifier, tool, tmp_path, capsys):
    config, checkpoint, _ = tiny_classifier
    vis = tool('vis_sampling')
    cases = [
        ([config, str(tmp_path / 'none.pth')], 'checkpoint not found'),
        ([config, checkpoint, '--shape', '64', '--points', '64,3'],
         r'point \(64, 3\) is outside the image'),
        ([config, checkpoint, '--img', str(tmp_path / 'none.jpg')],
         'image not found'),
        ([str(tmp_path / 'none.py'), checkpoint], 'config file not found'),
    ]
    convnext = tmp_path / 'convnext.py'
    convnext.write_text(f"_base_ = [{CLS_CONFIG!r}]\nmodel = dict(backbone="
                        "dict(_delete_=True, type='ConvNeXt', arch='atto'))\n")
    cases.append(([str(convnext), checkpoint],
                  'has ConvNeXt, not an InternImage backbone'))
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.x': torch.zeros(1)}}, other)
    cases.append(([config, str(other)], 'does not fit the model'))
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            vis.main(argv + ['--out', str(tmp_path / 'x.png')])
        assert re.search(message, str(e.value)), (argv, e.value)
    assert not (tmp_path / 'x.png').exists()


def test_vis_erf_end_to_end(tiny_classifier, tool, tmp_path, capsys):
    from PIL import Image
    config, checkpoint, _ = tiny_classifier
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(
            images / f'{i}.png')
    out = tmp_path / 'erf.png'
    erf = tool('vis_erf')
    erf.main([config, checkpoint, '--img', str(images), '--shape', '64',
              '--compare', 'convnext-tiny_32xb128_in1k', '--out', str(out)])
    printed = capsys.readouterr().out
    assert 'ERF over 2 image(s) at 64 x 64' in printed
    assert '(random init)' in printed and '(tiny_cls.pth)' in printed
    areas = [int(line.split()[2]) for line in printed.splitlines()
             if line.strip().startswith('stage ')]
    assert len(areas) == 8 and all(0 < a <= 64 * 64 for a in areas)
    with Image.open(out) as png:
        assert png.format == 'PNG' and png.size[0] > png.size[1]
    with pytest.raises(SystemExit, match='neither a config file nor'):
        erf.main([config, '--compare', 'no-such-model', '--shape', '32'])
