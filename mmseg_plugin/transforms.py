# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""A data check mmseg lacks: label maps that do not fit their image or the
classes stop the run with the file's name, instead of training on wrong
labels or failing deep inside the loss or the metric."""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Check ``gt_seg_map`` against its image and the classes.

    Put it right after ``LoadAnnotations`` (in a test pipeline, where the
    labels are loaded after resizing, too: it compares with the image's size
    as loaded, ``ori_shape``); without labels (inference) it does nothing.
    Raises ``ValueError`` naming the label file
    when

    - the label map's height and width differ from the image's;
    - a label (after ``reduce_zero_label`` and the dataset's ``label_map``)
      is neither in ``[0, num_classes)`` nor ``ignore_index``.

    Args:
        num_classes (int): number of classes the model predicts.
        ignore_index (int): label ignored by the loss and the metric.
            Default: 255.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError('CheckSegLabels: num_classes must be a positive '
                             f'int, got {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        seg_path = results.get('seg_map_path', '<label map>')
        img_path = results.get('img_path', '<image>')
        seg = results.get('gt_seg_map')
        if seg is None:
            # inference: mmseg.apis drops LoadAnnotations from the pipeline
            return results
        image_shape = tuple(results.get('ori_shape',
                                        results.get('img_shape'))[:2])
        if tuple(seg.shape[:2]) != image_shape:
            raise ValueError(
                f'{seg_path}: the label map is {seg.shape[0]}x{seg.shape[1]}'
                f' (HxW) but its image {img_path} is {image_shape[0]}x'
                f'{image_shape[1]}; they must have the same size')
        labels = seg[seg != self.ignore_index]
        if labels.size and (labels.min() < 0
                            or labels.max() >= self.num_classes):
            values = np.unique(labels)
            bad = values[(values < 0) | (values >= self.num_classes)]
            hint = ''
            if results.get('reduce_zero_label'):
                hint = (' (reduce_zero_label is on: file value v is class '
                        f'v - 1, so the file holds {(bad + 1).tolist()[:10]}'
                        f' where 0..{self.num_classes} are allowed)')
            raise ValueError(
                f'{seg_path}: labels {bad.tolist()[:10]} are outside the '
                f'{self.num_classes} classes [0, {self.num_classes - 1}] and '
                f'are not ignore_index {self.ignore_index}{hint}')
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
