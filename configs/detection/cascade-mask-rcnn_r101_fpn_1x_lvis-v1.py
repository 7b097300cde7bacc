# Cascade Mask R-CNN R101-FPN on LVIS v1, 1x (GOL's Table 7: another framework), composed as mmdet
# composes its LVIS Mask R-CNN configs: mmdet's cascade model, its LVIS v1 data (RFS), 1x
# schedule and runtime.  Three box heads, each with its own classifier: run.py gives every stage
# the run's loss and activation (and mmdet's head init, then the paper's fc_cls init); at test
# time mmdet averages the stages' class scores.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)

model = dict(
    backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')),
    roi_head=dict(mask_head=dict(num_classes=1203)),
    # LVIS: a low score threshold and up to 300 detections per image (mmdet's LVIS configs)
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))
