# GOL (ECCV 2022) on LVIS v1: Mask R-CNN R50-FPN, Gumbel activation + DropLoss (lambda 0.0011 on
# LVIS v1 image-count frequencies, C outputs), repeat-factor sampling (0.001), normalised mask
# head, NMS IoU 0.3, score threshold 1e-4, 300 detections per image, 2x schedule.  The box head's
# init (mmdet's defaults, then the paper's classifier init) comes from the RFS config.
_base_ = './mask-rcnn_r50_fpn_rfs_1x_lvis-v1.py'

data_root = 'data/lvis_v1/'
model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(_delete_=True, type='DropLoss', activation='gumbel', num_classes=1203,
                          lambda_=0.0011, frequency_file=data_root + 'annotations/lvis_v1_train.json',
                          loss_weight=1.0)),
        # normalised mask head: cosine-normalised mask predictor, temperature 20 (mmdet's
        # NormedConv2d spells the argument "tempearture")
        mask_head=dict(predictor_cfg=dict(type='NormedConv2d', tempearture=20))),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, nms=dict(type='nms', iou_threshold=0.3), max_per_img=300)))

# 2x schedule (mmdet's schedule_2x): 24 epochs, lr x0.1 at epochs 16 and 22
train_cfg = dict(max_epochs=24)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1),
]
