# RetinaNet R50-FPN on LVIS v1, random sampler, 1x, boxes only: the dense detector of GOL's
# conclusion (sigmoid focal loss against the same focal modulation over Gumbel probabilities).
# The model, its anchors, lr (0.01 per 16 images) and 1x schedule are mmdet's COCO RetinaNet;
# the data is mmdet's LVIS v1 data (multi-scale training, LVISMetric) without masks and without
# the repeat-factor wrapper (detection.sampler=rfs puts it back); the test protocol is LVIS's as
# mmdet's LVIS configs set it: up to 300 detections per image from score 1e-4 (COCO's RetinaNet
# keeps 100 from 0.05, which would cut the rare categories).  run.py puts the run's loss
# (detector.loss=focal, activation=sigmoid|gumbel) and the classifier's init on the head.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        num_classes=1203,
        loss_cls=dict(_delete_=True, type='ActivationFocalLoss', activation='gumbel', num_classes=1203,
                      gamma=2.0, alpha=0.25, use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(score_thr=0.0001, max_per_img=300))

dataset_type = 'LVISV1Dataset'
data_root = 'data/lvis_v1/'
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_val.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='LVISMetric', ann_file=data_root + 'annotations/lvis_v1_val.json',
                     metric='bbox', backend_args=backend_args)
test_evaluator = val_evaluator
