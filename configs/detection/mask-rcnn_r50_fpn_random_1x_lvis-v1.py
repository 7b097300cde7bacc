# Mask R-CNN R50-FPN on LVIS v1, random sampler, 1x: the activation ablation of GOL's Table 1.
# The box classifier has C + 1 outputs and uses lt_bench's activation (here Gumbel; run.py's
# `activation=sigmoid|softmax|gumbel` swaps it).  Everything else is mmdet's own LVIS config.
_base_ = 'mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)

data_root = 'data/lvis_v1/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
# Random sampler: the plain dataset instead of the base's repeat-factor (ClassBalanced) wrapper.
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='LVISV1Dataset',
        data_root=data_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline))

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(_delete_=True, type='ActivationCrossEntropyLoss', activation='gumbel',
                          num_classes=1203, loss_weight=1.0),
            # Gumbel: weights 0.001, bias -2 (sigmoid/softmax: -6.5), from lt_bench.activations
            init_cfg=[
                dict(type='ActivationClassifierInit', activation='gumbel', scheme='detection',
                     override=dict(name='fc_cls')),
                dict(type='Normal', std=0.001, override=dict(name='fc_reg')),
            ])))
