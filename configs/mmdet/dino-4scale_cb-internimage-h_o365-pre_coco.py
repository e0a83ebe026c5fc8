# DINO (4 scales) with CB-InternImage-H, the composite backbone of two
# InternImage-H (CBNet), fine-tuned on COCO from the official Objects365
# detector (dino_4scale_cbinternimage_h_objects365_coco_ss.py). The assisting
# backbone gives levels 0-3 to the lead one, which has no stem of its own;
# the lead backbone's levels 1-3 go to the neck. The layer-wise lr decay
# (0.94, inherited) does not reach CB-InternImage's parameters (cb_modules.*,
# cb_linears.*): they train at the full lr, as in the official fine-tuning.
_base_ = './dino-4scale_internimage-h_o365-pre_coco.py'
# Start from the official Objects365 detector (80-class head), converted:
#   python tools/convert_checkpoint.py \
#       dino_4scale_cbinternimage_h_objects365_80classes.pth cb-h_o365.pth
# then train with --cfg-options load_from=cb-h_o365.pth
load_from = None
model = dict(
    backbone=dict(
        _delete_=True,
        type='CBInternImage',
        arch='h',
        core_op='DCNv3',
        drop_path_rate=0.5,
        with_cp=True,
        out_indices=[(0, 1, 2, 3), (1, 2, 3)],
        init_cfg=None))
