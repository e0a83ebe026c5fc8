# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The tools on the embedded tiny COCO set: make_tiny_coco, train.py (loss
goes down, --resume continues the run), test.py (bbox/segm mAP, loads a
train.py checkpoint), image_demo.py (detection), dist_train.sh (2 CPU
processes agree), and clear errors for missing files."""
import filecmp
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from mmdet_helpers import SMALL, TINY_CONFIG, data_options, small_config

import mmdet_plugin  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory, tool):
    root = tmp_path_factory.mktemp('tiny_coco')
    tool('make_tiny_coco').make_tiny_coco(str(root), num_train=12, num_val=4,
                                          size=64, seed=0)
    return root


def scalars(work_dir):
    """The training log records (mmengine's vis_data/scalars.json)."""
    found = []
    for dirpath, _, files in os.walk(work_dir):
        if 'scalars.json' in files:
            with open(os.path.join(dirpath, 'scalars.json')) as f:
                found += [json.loads(line) for line in f]
    return found


def test_make_tiny_coco_is_deterministic_and_mmdet_reads_it(tmp_path, tool):
    make = tool('make_tiny_coco')
    for out in ('a', 'b'):
        make.main(['--out', str(tmp_path / out), '--train', '3', '--val', '2',
                   '--size', '64'])
    for rel in ('annotations/instances_train.json', 'train/00002.png',
                'val/00001.png'):
        assert filecmp.cmp(tmp_path / 'a' / rel, tmp_path / 'b' / rel,
                           shallow=False), rel
    from mmdet.datasets import CocoDataset
    with open(tmp_path / 'a/annotations/instances_train.json') as f:
        coco = json.load(f)
    assert len(coco['categories']) == 4 and len(coco['images']) == 3
    ds = CocoDataset(
        data_root=str(tmp_path / 'a'), ann_file='annotations/'
        'instances_train.json', data_prefix=dict(img='train/'),
        metainfo=dict(classes=make.CLASSES), pipeline=[], test_mode=False)
    assert len(ds) == 3
    item = ds[0]
    assert item['instances'] and item['instances'][0]['mask']


@pytest.fixture(scope='module')
def trained(tiny_coco, tmp_path_factory, tool):
    """tools/train.py for 2 epochs (6 iterations) on the tiny set."""
    train = tool('train')
    work = tmp_path_factory.mktemp('work')
    train.main([
        TINY_CONFIG, '--work-dir', str(work), '--cfg-options', *SMALL,
        *data_options(tiny_coco), 'train_cfg.max_epochs=2',
        'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=3',
        'param_scheduler.1.end=3'
    ])
    return train, work


def test_training_reduces_the_loss_and_validates(trained):
    _, work = trained
    records = scalars(work)
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 6
    assert sum(losses[-2:]) < sum(losses[:2])
    val = [r for r in records if 'coco/bbox_mAP' in r]
    assert val and 'coco/segm_mAP' in val[0]
    assert os.path.isfile(work / 'epoch_2.pth')


def test_checkpoints_load_with_torch_defaults(trained):
    """Runner checkpoints (message hub, numpy objects) load with torch's
    weights_only=True: importing mmdet_plugin allow-listed the few
    classes."""
    import pickle
    _, work = trained
    path = str(work / 'epoch_2.pth')
    ckpt = torch.load(path, map_location='cpu')
    assert ckpt['meta']['iter'] == 6 and 'message_hub' in ckpt
    # Anything else is still refused, getattr on other objects included.
    bad = work / 'bad.pth'
    torch.save({'obj': Exception('x')}, bad)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad)
    torch.save({'fn': torch.Tensor.add}, bad)  # pickled through getattr
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad)


def test_resume_continues_the_same_run(trained, tiny_coco):
    train, work = trained
    runner = train.main([
        TINY_CONFIG, '--work-dir', str(work), '--resume',
        str(work / 'epoch_2.pth'), '--cfg-options', *SMALL,
        *data_options(tiny_coco), 'train_cfg.max_epochs=3',
        'train_cfg.val_interval=10', 'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=3',
        'param_scheduler.1.end=3'
    ])
    assert runner.iter == 9 and runner.epoch == 3
    before = torch.load(work / 'epoch_2.pth', map_location='cpu')
    after = torch.load(work / 'epoch_3.pth', map_location='cpu')
    # Adam's step counts continue from the checkpoint: 6 + 3.
    steps = {int(s['step']) for s in after['optimizer']['state'].values()}
    assert steps == {9}
    # The resumed weights started from the checkpoint's: they moved by 3
    # steps of at most lr each (Adam), not from a fresh initialisation.
    name = 'backbone.levels.0.blocks.0.mlp.fc1.weight'
    delta = (after['state_dict'][name] - before['state_dict'][name]).abs()
    assert 0 < delta.max() < 3 * 1e-3 * 1.01


def test_test_py_reports_coco_metrics(trained, tiny_coco, tool, tmp_path):
    _, work = trained
    out = tmp_path / 'preds.pkl'
    metrics = tool('test').main([
        TINY_CONFIG, str(work / 'epoch_2.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out', str(out), '--show-dir', 'vis',
        '--cfg-options', *SMALL, *data_options(tiny_coco)
    ])
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'):
        assert 0 <= metrics[key] <= 1, key
    assert out.is_file()
    pngs = [f for _, _, files in os.walk(tmp_path / 'test') for f in files
            if f.endswith('.png')]
    assert len(pngs) == 4


def test_image_demo_draws_detections(trained, tiny_coco, tool, tmp_path,
                                     capsys):
    """image_demo.py on a detection config: DetInferencer draws boxes and
    masks (the config given with the model's size on the command line is
    not possible, so a config file is written)."""
    _, work = trained
    config = tmp_path / 'small.py'
    small_config().dump(str(config))
    tool('image_demo').main([
        str(config), str(work / 'epoch_2.pth'), '--img',
        str(tiny_coco / 'val' / '00000.png'), '--out-dir',
        str(tmp_path / 'out'), '--score-thr', '0.0'
    ])
    out = capsys.readouterr().out
    assert 'visualised: ' in out
    assert (tmp_path / 'out' / 'vis' / '00000.png').is_file()


def test_missing_annotation_file_is_named(tiny_coco, tool, tmp_path):
    missing = tmp_path / 'nowhere' / 'instances_train.json'
    with pytest.raises(FileNotFoundError, match='instances_train.json'):
        tool('train').main([
            TINY_CONFIG, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
            *SMALL, *data_options(tiny_coco),
            f'train_dataloader.dataset.ann_file={missing}'
        ])


def test_missing_image_is_named(tiny_coco, tool, tmp_path):
    import shutil
    root = tmp_path / 'broken'
    shutil.copytree(tiny_coco, root)
    os.remove(root / 'train' / '00003.png')
    with pytest.raises(FileNotFoundError, match='00003.png'):
        tool('train').main([
            TINY_CONFIG, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
            *SMALL, *data_options(root), 'train_dataloader.batch_size=12',
            'train_cfg.max_epochs=1'
        ])


def test_missing_config_or_checkpoint_is_named(tool, tmp_path):
    with pytest.raises(SystemExit, match='config file not found'):
        tool('train').main([str(tmp_path / 'nope.py')])
    with pytest.raises(SystemExit, match='checkpoint not found'):
        tool('test').main([TINY_CONFIG, str(tmp_path / 'nope.pth')])
    with pytest.raises(SystemExit, match='no such checkpoint'):
        tool('train').main([TINY_CONFIG, '--resume',
                            str(tmp_path / 'nope.pth')])


PROBE = '''
import os
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class SaveRankWeights(Hook):
    """Each rank saves its weights after training."""

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') \\
            else runner.model
        torch.save(model.state_dict(),
                   os.path.join(runner.work_dir, f'rank{get_rank()}.pth'))
'''


# Two fresh interpreters (~30 s on 2 cores): CI runs it, since nothing
# else shows that multi-process training works.
def test_dist_train_two_cpu_processes_agree(tiny_coco, tmp_path):
    """tools/dist_train.sh with 2 processes on the CPU (gloo): both ranks end
    with the same weights, and they moved."""
    (tmp_path / 'probe_hook.py').write_text(textwrap.dedent(PROBE))
    config = tmp_path / 'probe_config.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = {TINY_CONFIG!r}
        custom_imports = dict(imports=['mmdet_plugin', 'probe_hook'],
                              allow_failed_imports=False)
        custom_hooks = [dict(type='SaveRankWeights')]
        '''))
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHON=sys.executable, PORT='29533',
               OMP_NUM_THREADS='1',
               PYTHONPATH=f'{tmp_path}:{ROOT}')
    proc = subprocess.run(
        ['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), str(config),
         '2', '--work-dir', str(work), '--cfg-options', *SMALL,
         *data_options(tiny_coco), 'train_cfg.max_epochs=1',
         'train_cfg.val_interval=10', 'train_dataloader.batch_size=2'],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0 = torch.load(work / 'rank0.pth')
    rank1 = torch.load(work / 'rank1.pth')
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], msg=key)
    # 12 images, 2 per rank and step: 3 iterations, logged by rank 0.
    losses = [r for r in scalars(work) if 'loss' in r]
    assert len(losses) == 3
