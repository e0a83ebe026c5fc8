# UperNet + InternImage-XL on ADE20K (official upernet_internimage_xl_640_
# 160k): the L recipe with the XL backbone.
_base_ = './upernet_internimage-l_8xb2-160k_ade20k-640x640.py'
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_xl_22k_192to384.pth')

model = dict(
    backbone=dict(arch='xl', init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768),
)
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=39, depths=[5, 5, 24, 5]))
