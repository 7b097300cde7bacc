# Mask R-CNN R101-FPN on LVIS v1, 1x (GOL's Table 7: a larger backbone).  mmdet's own LVIS config
# (RFS, as shipped); the paper's Table 7 runs use the random sampler: run.py's
# detection.sampler=random (configs/experiment/gol_table7.yaml sets it).  run.py puts the box
# classifier (loss, activation, mmdet's head init then the paper's fc_cls init) on the head.
_base_ = 'mmdet::lvis/mask-rcnn_r101_fpn_sample1e-3_ms-1x_lvis-v1.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)
