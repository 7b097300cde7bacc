# Mask R-CNN R50-FPN on LVIS v1 with repeat-factor sampling (threshold 0.001), 1x: the RFS rows
# of GOL's Table 1.  mmdet's LVIS config already samples with RFS; only the box classifier differs.
_base_ = 'mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(_delete_=True, type='ActivationCrossEntropyLoss', activation='gumbel',
                          num_classes=1203, loss_weight=1.0),
            # A head given any init_cfg loses the defaults mmdet's Shared2FCBBoxHead gives itself,
            # so they are listed first, unchanged (and in mmdet's order: the random stream stays
            # stock mmdet's); then the paper's classifier init, weights 0.001 and bias -2 for
            # Gumbel (-6.5 for sigmoid and softmax), on fc_cls only.  run.py builds this list
            # from mmdet's class itself; tests/unit/detection/test_init_like_stock.py checks both against stock.
            init_cfg=[
                dict(type='Normal', std=0.01, override=dict(name='fc_cls')),
                dict(type='Normal', std=0.001, override=dict(name='fc_reg')),
                dict(type='Xavier', distribution='uniform',
                     override=[dict(name='shared_fcs'), dict(name='cls_fcs'), dict(name='reg_fcs')]),
                dict(type='ActivationClassifierInit', activation='gumbel', scheme='paper',
                     override=dict(name='fc_cls')),
            ])))
