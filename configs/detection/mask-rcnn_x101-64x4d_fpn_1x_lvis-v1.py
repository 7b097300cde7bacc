# Mask R-CNN ResNeXt-101 64x4d FPN on LVIS v1, 1x (GOL's Table 7).  mmdet's own LVIS config;
# the backbone starts from open-mmlab's ImageNet ResNeXt weights (detection.backbone_pretrained=
# torchvision keeps the config's checkpoint, whichever zoo it names).  Sampler and box classifier
# as in mask-rcnn_r101_fpn_1x_lvis-v1.py.
_base_ = 'mmdet::lvis/mask-rcnn_x101-64x4d_fpn_sample1e-3_ms-1x_lvis-v1.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)
