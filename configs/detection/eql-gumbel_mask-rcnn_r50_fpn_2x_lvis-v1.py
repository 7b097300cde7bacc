# EQL (lambda 0.0011) with the Gumbel activation, normalised mask head, NMS IoU 0.3 (as every
# EQL config of the GOL authors), random sampler, 2x.
_base_ = './mask-rcnn_r50_fpn_random_1x_lvis-v1.py'
data_root = 'data/lvis_v1/'
model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(_delete_=True, type='EQLLoss', activation='gumbel', num_classes=1203,
                          lambda_=0.0011, frequency_file=data_root + 'annotations/lvis_v1_train.json',
                          loss_weight=1.0)),
        mask_head=dict(predictor_cfg=dict(type='NormedConv2d', tempearture=20))),
    test_cfg=dict(rcnn=dict(nms=dict(type='nms', iou_threshold=0.3))))

# 2x schedule (mmdet's schedule_2x): 24 epochs, lr x0.1 at epochs 16 and 22
train_cfg = dict(max_epochs=24)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1),
]
