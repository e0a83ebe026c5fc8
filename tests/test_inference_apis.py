# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The libraries' own inference APIs on this project's configs, called as a
user would, with torch's weights_only loading, on both kinds of checkpoint
this project writes: one of a short tools/train.py run (mmengine's Runner:
message hub, numpy scalars, ...) and one of tools/convert_checkpoint.py
(from an official-format checkpoint).

mmdet: DetInferencer, init_detector + inference_detector; mmseg:
MMSegInferencer, init_model + inference_model; mmpretrain:
ImageClassificationInferencer, get_model + inference_model. Also: importing
any plugin (or a config's custom_imports) installs the allow-list, and
anything else pickled is still refused."""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from mmcls_helpers import tiny_classifier_cfg, write_image_folder
from mmdet_helpers import SMALL_ARCH as DET_ARCH
from mmdet_helpers import small_config
from mmseg_helpers import SMALL_ARCH as SEG_ARCH
from mmseg_helpers import tiny_cfg
from official_det_format import mask_rcnn_shapes, official_checkpoint
from official_format import TINY, official_state_dict
from official_seg_format import random_state_dict, upernet_shapes

import mmcls_plugin  # noqa: F401
import mmdet_plugin  # noqa: F401
import mmseg_plugin  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ['train.py', 'converted']
DET_CLASSES = ('square', 'circle', 'triangle', 'star')
SEG_CLASSES = ('wall', 'building', 'sky', 'floor', 'tree')


def make(tmp, tool, cfg, official, extra=()):
    """Dump ``cfg`` to a config file, train it with tools/train.py, convert
    the official-format checkpoint ``official`` with
    tools/convert_checkpoint.py; returns the config path and the two
    checkpoints."""
    config = tmp / 'config.py'
    cfg.dump(str(config))
    work = tmp / 'work'
    tool('train').main([str(config), '--work-dir', str(work), *extra])
    with open(work / 'last_checkpoint') as f:
        trained = f.read().strip()
    torch.save(official, tmp / 'official.pth')
    tool('convert_checkpoint').main([str(tmp / 'official.pth'),
                                     str(tmp / 'converted.pth')])
    return str(config), {'train.py': trained,
                         'converted': str(tmp / 'converted.pth')}


def assert_loaded(model, checkpoint):
    """Every tensor of the model is the checkpoint's (loaded, strictly)."""
    saved = torch.load(checkpoint, map_location='cpu')['state_dict']
    own = model.state_dict()
    assert own.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(own[key].cpu(), value), key


# ---------------------------------------------------------------- mmdet
@pytest.fixture(scope='module')
def det(tmp_path_factory, tool):
    tmp = tmp_path_factory.mktemp('det')
    data = tool('make_tiny_coco').make_tiny_coco(
        str(tmp / 'data'), num_train=2, num_val=1, size=64)
    cfg = small_config(data, 'train_cfg.max_epochs=1',
                       'train_dataloader.batch_size=2')
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    official = official_checkpoint(
        mask_rcnn_shapes(DET_ARCH, [16, 32, 64, 128], len(DET_CLASSES)))
    official['meta']['CLASSES'] = DET_CLASSES
    config, checkpoints = make(tmp, tool, cfg, official)
    return config, checkpoints, os.path.join(data, 'val', '00000.png')


@pytest.mark.parametrize('kind', KINDS)
def test_det_inferencer(det, kind, tmp_path):
    from mmdet.apis import DetInferencer
    config, checkpoints, image = det
    inferencer = DetInferencer(model=config, weights=checkpoints[kind],
                               device='cpu', show_progress=False)
    assert_loaded(inferencer.model, checkpoints[kind])
    assert inferencer.model.dataset_meta['classes'] == DET_CLASSES
    result = inferencer(image, out_dir=str(tmp_path),
                        return_datasamples=True)
    pred = result['predictions'][0].pred_instances
    assert len(pred) > 0 and pred.masks.shape[1:] == (64, 64)
    assert (tmp_path / 'vis' / '00000.png').is_file()


@pytest.mark.parametrize('kind', KINDS)
def test_init_detector_and_inference_detector(det, kind):
    from mmdet.apis import inference_detector, init_detector
    config, checkpoints, image = det
    model = init_detector(config, checkpoints[kind], device='cpu')
    assert_loaded(model, checkpoints[kind])
    sample = inference_detector(model, image)
    assert len(sample.pred_instances) > 0


def test_other_pickled_objects_are_still_refused(det, tmp_path):
    """The allow-list is what the Runner writes, nothing more: a function
    elsewhere, or getattr of anything but HistoryBuffer's methods, is
    refused by the library's own loader (mmengine's CheckpointLoader, which
    every API above calls)."""
    from mmdet.apis import init_detector
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner import CheckpointLoader
    config, checkpoints, _ = det
    ckpt = torch.load(checkpoints['train.py'], map_location='cpu')

    class Sneaky:  # pickled as getattr(HistoryBuffer, '__init__')
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    bad = tmp_path / 'bad.pth'
    ckpt['meta']['payload'] = os.system
    torch.save(ckpt, bad)
    with pytest.raises(pickle.UnpicklingError, match='posix.system'):
        init_detector(config, str(bad), device='cpu')
    ckpt['meta']['payload'] = Sneaky()
    torch.save(ckpt, bad)
    with pytest.raises(pickle.UnpicklingError, match='not allowed'):
        CheckpointLoader.load_checkpoint(str(bad))


def test_importing_any_plugin_installs_the_allow_list(det):
    """In fresh interpreters (run side by side): a config's custom_imports
    (as DetInferencer(model=CONFIG) loads it), ``import mmseg_plugin`` and
    ``import mmcls_plugin`` each allow-list the Runner's objects."""
    check = textwrap.dedent('''
        import torch
        from mmengine.logging.history_buffer import HistoryBuffer
        safe = torch.serialization.get_safe_globals
        assert HistoryBuffer not in safe(), 'allowed before'
        {}
        assert HistoryBuffer in safe(), 'not allowed after'
        ''')
    imports = [f'from mmengine.config import Config; '
               f'Config.fromfile({det[0]!r})',  # custom_imports=[mmdet_plugin]
               'import mmseg_plugin', 'import mmcls_plugin']
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, os.environ.get('PYTHONPATH', '')]))
    procs = [subprocess.Popen([sys.executable, '-c', check.format(code)],
                              env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for code in imports]
    for code, proc in zip(imports, procs):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f'{code}: {err[-2000:]}'


# ---------------------------------------------------------------- mmseg
@pytest.fixture(scope='module')
def seg(tmp_path_factory, tool):
    tmp = tmp_path_factory.mktemp('seg')
    data = tool('make_tiny_ade20k').make_tiny_ade20k(
        str(tmp / 'data'), num_train=2, num_val=1)
    cfg = tiny_cfg(data, tmp / 'work', iters=2)
    official = random_state_dict(upernet_shapes(
        dict(SEG_ARCH, layer_scale=cfg.model.backbone.layer_scale),
        len(SEG_CLASSES), channels=16, aux_channels=8))
    # mmseg 0.x kept the classes and their palette in the meta
    meta = {'CLASSES': SEG_CLASSES, 'PALETTE': [[i * 40, 0, 0]
                                                for i in range(5)]}
    config, checkpoints = make(tmp, tool, cfg,
                               {'state_dict': official, 'meta': meta})
    return config, checkpoints, os.path.join(
        data, 'images', 'validation', 'ADE_val_00000001.jpg')


@pytest.mark.parametrize('kind', KINDS)
def test_mmseg_inferencer(seg, kind, tmp_path):
    from mmseg.apis import MMSegInferencer
    config, checkpoints, image = seg
    inferencer = MMSegInferencer(model=config, weights=checkpoints[kind],
                                 device='cpu')
    assert_loaded(inferencer.model, checkpoints[kind])
    assert inferencer.model.dataset_meta['classes'] == SEG_CLASSES
    result = inferencer(image, out_dir=str(tmp_path))
    assert result['predictions'].shape == (96, 128)
    assert (tmp_path / 'vis' / 'ADE_val_00000001.jpg').is_file()


@pytest.mark.parametrize('kind', KINDS)
def test_mmseg_init_model_and_inference_model(seg, kind):
    from mmseg.apis import inference_model, init_model
    config, checkpoints, image = seg
    model = init_model(config, checkpoints[kind], device='cpu')
    assert_loaded(model, checkpoints[kind])
    sample = inference_model(model, image)
    assert sample.pred_sem_seg.data.shape == (1, 96, 128)


# ----------------------------------------------------------- mmpretrain
@pytest.fixture(scope='module')
def cls(tmp_path_factory, tool):
    tmp = tmp_path_factory.mktemp('cls')
    write_image_folder(str(tmp / 'data'), per_class=2)
    cfg = tiny_classifier_cfg(tmp / 'data', tmp / 'work', epochs=1)
    official = {'model': official_state_dict(
        dtype=torch.float32, num_classes=2, **TINY['t'])}
    config, checkpoints = make(tmp, tool, cfg, official)
    return config, checkpoints, str(tmp / 'data' / 'red' / '0.png')


@pytest.mark.parametrize('kind', KINDS)
def test_image_classification_inferencer(cls, kind):
    from mmpretrain import ImageClassificationInferencer
    config, checkpoints, image = cls
    inferencer = ImageClassificationInferencer(
        model=config, pretrained=checkpoints[kind], device='cpu')
    assert_loaded(inferencer.model, checkpoints[kind])
    result = inferencer(image)[0]
    assert result['pred_scores'].shape == (2, )
    assert 0 <= result['pred_label'] < 2


def test_our_classifiers_are_in_mmpretrains_model_hub():
    """mmcls_plugin lists configs/mmpretrain's models in mmpretrain's
    ModelHub: get_model(NAME), inference_model and list_models know
    them."""
    from mmpretrain import list_models
    from mmpretrain.apis import ModelHub
    names = list_models('internimage*')
    assert len(names) == 7 and 'internimage-t_8xb128_in1k-224px' in names
    cfg = ModelHub.get('internimage-t_8xb128_in1k-224px').config
    assert cfg.model.backbone.type == 'InternImage'
    assert cfg.custom_imports.imports == ['mmcls_plugin']


@pytest.mark.parametrize('kind', KINDS)
def test_get_model_and_inference_model(cls, kind, tmp_path):
    """By name, as mmpretrain's inference_model needs: a model-index entry
    for the tiny config (the plugin registers the real ones)."""
    from mmpretrain import get_model, inference_model
    from mmpretrain.apis import ModelHub
    config, checkpoints, image = cls
    name = 'tiny-internimage-' + kind.replace('.', '-')
    (tmp_path / 'metafile.yml').write_text(textwrap.dedent(f"""
        Models:
          - Name: {name}
            Config: {config}
            Results:
              - Task: Image Classification
                Dataset: tiny
                Metrics:
                  Top 1 Accuracy: 0
        """))
    ModelHub.register_model_index(tmp_path / 'metafile.yml')
    model = get_model(name, pretrained=checkpoints[kind], device='cpu')
    assert_loaded(model, checkpoints[kind])
    result = inference_model(model, image)
    assert result['pred_scores'].shape == (2, )
    # a config file works too (inference through the inferencer class)
    model = get_model(config, pretrained=checkpoints[kind], device='cpu')
    assert_loaded(model, checkpoints[kind])
