# Mask R-CNN R50-FPN on LVIS v1 with repeat-factor sampling (threshold 0.001), 1x: the RFS rows
# of GOL's Table 1.  mmdet's LVIS config already samples with RFS; only the classifier differs.
_base_ = 'mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(_delete_=True, type='ActivationCrossEntropyLoss', activation='gumbel',
                          num_classes=1203, loss_weight=1.0),
            init_cfg=[
                dict(type='ActivationClassifierInit', activation='gumbel', scheme='detection',
                     override=dict(name='fc_cls')),
                dict(type='Normal', std=0.001, override=dict(name='fc_reg')),
            ])))
