# mmdet's Seesaw Loss Mask R-CNN R50-FPN on LVIS v1 with repeat-factor sampling (1e-3), 2x, as mmdet
# ships it (detector.box_classifier: stock): a context row of GOL's Table 8.  mmdet's model zoo:
# mask AP 26.4, box AP 27.6.
_base_ = 'mmdet::seesaw_loss/mask-rcnn_r50_fpn_seesaw-loss_sample1e-3-ms-2x_lvis-v1.py'
custom_imports = dict(imports=['lt_bench.detection.registry'], allow_failed_imports=False)
