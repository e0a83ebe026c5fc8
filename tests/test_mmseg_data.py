# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The tiny ADE20K-format generator and the label check (CheckSegLabels)
through mmseg's own ADE20KDataset."""
import hashlib
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import DefaultScope
from mmseg_helpers import load
from PIL import Image

import mmseg_plugin  # noqa: F401
from mmseg.registry import DATASETS, TRANSFORMS

CONFIG = 'upernet_internimage-t_8xb2-160k_ade20k-512x512.py'


def digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            with open(osp.join(d, f), 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_generator_is_deterministic_and_ade20k_shaped(tmp_path, tool):
    make = tool('make_tiny_ade20k')
    a = make.make_tiny_ade20k(str(tmp_path / 'a'), 3, 2, seed=1)
    b = make.make_tiny_ade20k(str(tmp_path / 'b'), 3, 2, seed=1)
    assert digest(a) == digest(b)
    labels = np.asarray(Image.open(
        osp.join(a, 'annotations', 'training', 'ADE_train_00000001.png')))
    assert labels.dtype == np.uint8 and labels.shape == make.SIZE
    assert set(np.unique(labels)) <= set(range(len(make.CLASSES) + 1))
    # mmseg's ADE20KDataset reads it; the config's classes select ids 0-4
    cfg = load('upernet_internimage-t_tiny-ade20k.py')
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(dict(cfg.val_dataloader.dataset,
                                      data_root=a))
    assert len(dataset) == 2
    assert dataset.metainfo['classes'] == make.CLASSES
    sample = dataset[0]['data_samples']
    values = set(np.unique(sample.gt_sem_seg.data.numpy()))
    assert values <= set(range(5)) | {255}


def write_pair(root, image_hw, labels):
    for d in ('images/validation', 'annotations/validation'):
        os.makedirs(osp.join(root, d), exist_ok=True)
    Image.fromarray(np.zeros(image_hw + (3, ), np.uint8)).save(
        osp.join(root, 'images/validation/ADE_val_00000001.jpg'))
    Image.fromarray(labels.astype(np.uint8)).save(
        osp.join(root, 'annotations/validation/ADE_val_00000001.png'))


def dataset(root):
    """The full config's test set (150 classes) on ``root``."""
    cfg = load(CONFIG)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(dict(cfg.test_dataloader.dataset,
                                   data_root=str(root)))


def test_labels_outside_the_classes_name_the_file(tmp_path):
    labels = np.zeros((32, 48))
    labels[:4, :4] = 151  # class 150 after reduce_zero_label: 150 classes
    write_pair(tmp_path, (32, 48), labels)
    with pytest.raises(ValueError, match=r'ADE_val_00000001.png: labels '
                       r'\[150\] are outside the 150 classes.*file holds '
                       r'\[151\]'):
        dataset(tmp_path)[0]


def test_label_and_image_sizes_must_match(tmp_path):
    write_pair(tmp_path, (32, 48), np.ones((32, 40)))
    with pytest.raises(ValueError, match=r'ADE_val_00000001.png: the label '
                       r'map is 32x40 .*ADE_val_00000001.jpg is 32x48'):
        dataset(tmp_path)[0]


def test_good_labels_pass(tmp_path):
    labels = np.zeros((32, 48))
    labels[:, 24:] = 150  # the last class; 0 is ignored
    write_pair(tmp_path, (32, 48), labels)
    data = dataset(tmp_path)[0]
    assert set(np.unique(data['data_samples'].gt_sem_seg.data)) == {149, 255}


def test_check_arguments_and_inference():
    with pytest.raises(ValueError, match='num_classes must be a positive'):
        TRANSFORMS.build(dict(type='CheckSegLabels', num_classes=0))
    check = TRANSFORMS.build(dict(type='CheckSegLabels', num_classes=3))
    # inference (mmseg.apis removes LoadAnnotations): nothing to check
    results = dict(img_path='x.jpg', img_shape=(2, 2), ori_shape=(2, 2))
    assert check(dict(results)) == results
