# A small Mask R-CNN (ResNet-18 FPN with 64 channels, random init) for the learning check on the
# generated toy set (lt_bench/detection/toy.py: 12 shape-colour categories, 128 px images, LVIS v1
# format).  Everything else is the random-sampler Table 1 detector: the same plugin, losses, box
# head init and evaluation, so a run that learns here proves that path on CPU in minutes.
_base_ = './mask-rcnn_r50_fpn_random_1x_lvis-v1.py'

model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=64, fc_out_channels=256),
        mask_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(num_convs=2, in_channels=64, conv_out_channels=64)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=100)))

image_scale = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(filter_cfg=dict(filter_empty_gt=True, min_size=8), pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# from scratch: a higher lr than the ImageNet-initialised detectors (per 16 images; run.py scales
# it linearly to detection.batch_size), a short warm-up, 8 epochs with a step at 6
optim_wrapper = dict(optimizer=dict(lr=0.04), clip_grad=dict(max_norm=10, norm_type=2))
train_cfg = dict(max_epochs=8)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=8, by_epoch=True, milestones=[6], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=25), checkpoint=dict(interval=8))
