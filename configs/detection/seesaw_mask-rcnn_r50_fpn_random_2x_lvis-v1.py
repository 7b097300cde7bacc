# mmdet's Seesaw Loss Mask R-CNN R50-FPN on LVIS v1 (Wang et al., CVPR 2021; random sampler, 2x,
# normalised linear classifier), as mmdet ships it: a context row of GOL's Table 8, re-run in the
# same harness.  The box classifier stays the config's (detector.box_classifier: stock); run.py
# only sets the data, the batch and the evaluation.  mmdet's model zoo: mask AP 25.0, box AP 25.6.
_base_ = 'mmdet::seesaw_loss/mask-rcnn_r50_fpn_seesaw-loss_random-ms-2x_lvis-v1.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)
