# RetinaNet R50-FPN on COCO 2017, 1x: mmdet's own config (data, schedule, lr 0.01 per 16 images,
# COCO's test protocol: 100 detections from score 0.05, CocoMetric).  run.py puts the run's loss
# (detector.loss=focal over activation=sigmoid|gumbel) and the classifier's init on the head;
# the loss below only names the plugin's class for a user of this file alone.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        loss_cls=dict(_delete_=True, type='ActivationFocalLoss', activation='gumbel', num_classes=80,
                      gamma=2.0, alpha=0.25, use_sigmoid=True, loss_weight=1.0)))
