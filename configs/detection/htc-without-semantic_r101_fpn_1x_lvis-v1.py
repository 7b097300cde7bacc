# Hybrid Task Cascade R101-FPN without the semantic branch (LVIS has no stuff annotations), 1x, on
# LVIS v1 (GOL's Table 7).  The model and schedule are mmdet's htc-without-semantic config with a
# ResNet-101; its COCO data is replaced by mmdet's LVIS v1 data (RFS), which run.py reads from the
# detector's data_config (lvis-v1_data.py), so neither is written out here.  Three box heads and
# three mask heads: run.py sets the run's classifier on each box head and 1,203 classes on each.
_base_ = 'mmdet::htc/htc-without-semantic_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)

model = dict(
    backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))
