# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Try mmdeploy's whole-detector ONNX export on a detection config and show
what stops it (mmdeploy is not part of this project's setup; see README).

    pip install --no-deps --target /tmp/mmdeploy_pkgs mmdeploy==1.3.1 \\
        aenum==3.1.17 multiprocess==0.70.19 dill==0.4.1
    PYTHONPATH=$PWD:/tmp/mmdeploy_pkgs python tools/probe_mmdeploy.py \\
        configs/mmdet/mask-rcnn_internimage-t_fpn_tiny-coco.py OUT_DIR \\
        [--workarounds]

The detector gets random weights. The deploy config is mmdeploy's
instance-seg ONNX Runtime dynamic one (the wheel ships no configs), at
opset 17 for GridSample. ``--workarounds`` applies, for this run only, the
two changes mmdeploy 1.3.1 needs on torch >= 2.9: the TorchScript exporter
(``dynamo=False``; mmdeploy's call takes torch's default, the dynamo one) and
``torch.onnx.symbolic_opset9._cast_Long`` (removed from torch, imported by
mmdeploy's RoIAlign symbolic). Then it runs the file in ONNX Runtime at two
batch sizes and image sizes and prints the operators and output shapes.
"""
import argparse
import collections
import functools
import os.path as osp
import sys

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

DEPLOY_CFG = dict(
    onnx_config=dict(
        type='onnx', export_params=True, keep_initializers_as_inputs=False,
        opset_version=17, save_file='end2end.onnx', input_names=['input'],
        output_names=['dets', 'labels', 'masks'], input_shape=None,
        optimize=True,
        dynamic_axes=dict(
            input={0: 'batch', 2: 'height', 3: 'width'},
            dets={0: 'batch', 1: 'num_dets'},
            labels={0: 'batch', 1: 'num_dets'},
            masks={0: 'batch', 1: 'num_dets', 2: 'height', 3: 'width'})),
    codebase_config=dict(
        type='mmdet', task='ObjectDetection', model_type='end2end',
        post_processing=dict(
            score_threshold=0.05, confidence_threshold=0.005,
            iou_threshold=0.5, max_output_boxes_per_class=200,
            pre_top_k=5000, keep_top_k=100, background_label_id=-1,
            export_postprocess_mask=False)),
    backend_config=dict(type='onnxruntime'))


def apply_workarounds():
    torch.onnx.export = functools.partial(torch.onnx.export, dynamo=False)
    import torch.onnx.symbolic_opset9 as opset9
    opset9._cast_Long = lambda g, x, non_blocking: g.op('Cast', x, to_i=7)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmdet config')
    parser.add_argument('work_dir', help='where end2end.onnx goes')
    parser.add_argument('--workarounds', action='store_true')
    args = parser.parse_args(argv)
    import cv2
    from mmengine.config import Config
    from mmdeploy.apis import torch2onnx

    from internimage.complexity import build_from_config
    if args.workarounds:
        apply_workarounds()
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.pop('init_cfg', None)
    torch.manual_seed(0)
    checkpoint = osp.join(args.work_dir, 'random.pth')
    torch.save({'state_dict': build_from_config(cfg, 'cpu').state_dict()},
               checkpoint)
    image = osp.join(args.work_dir, 'image.png')
    cv2.imwrite(image, np.random.default_rng(0).integers(
        0, 255, (128, 160, 3), dtype=np.uint8))
    torch2onnx(image, args.work_dir, 'end2end.onnx', Config(DEPLOY_CFG),
               args.config, checkpoint, device='cpu')
    import onnx
    import onnxruntime as ort
    path = osp.join(args.work_dir, 'end2end.onnx')
    model = onnx.load(path)
    ops = collections.Counter(f'{n.domain or "ai.onnx"}::{n.op_type}'
                              for n in model.graph.node)
    print(f'{path}: opset {model.opset_import[0].version}, operators {dict(ops)}')
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for shape in ((1, 3, 128, 160), (2, 3, 96, 128)):
        outs = session.run(None, {'input': np.random.randn(*shape).astype(
            np.float32)})
        print(f'ONNX Runtime, input {shape}: outputs '
              f'{[o.shape for o in outs]}')


if __name__ == '__main__':
    main()
