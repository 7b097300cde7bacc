# Mask R-CNN R50-FPN on LVIS v1, random sampler, 1x: the activation ablation of GOL's Table 1.
# The box classifier has C + 1 outputs and uses lt_bench's activation (here Gumbel; run.py's
# `activation=sigmoid|softmax|gumbel` swaps it); it inherits the RFS config below and only
# replaces its repeat-factor sampler by the plain dataset.
_base_ = './mask-rcnn_r50_fpn_rfs_1x_lvis-v1.py'

data_root = 'data/lvis_v1/'
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
# Random sampler: the plain dataset instead of the base's repeat-factor (ClassBalanced) wrapper,
# field for field mmdet's inner dataset (run.py's detection.sampler=random on the RFS config gives
# the same; tests/unit/detection/test_runner.py checks it).
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='LVISV1Dataset',
        data_root=data_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=None))
