# The toy RetinaNet (toy_retinanet_r18_fpn_lvis-v1.py: model, pipelines, schedule) on the
# generated toy set written in COCO's format (lt_bench.detection.toy.make_toy_coco), with COCO's
# data and evaluation: CocoDataset, mmdet's CocoMetric, detections from score 0.05 (run.py sets
# the files and image folders of task=coco).  The task=coco path on CPU in a test.
_base_ = './toy_retinanet_r18_fpn_lvis-v1.py'

coco = dict(type='CocoDataset', data_root='data/coco/')
model = dict(bbox_head=dict(num_classes=80, loss_cls=dict(num_classes=80)), test_cfg=dict(score_thr=0.05))
train_dataloader = dict(dataset=dict(**coco, ann_file='annotations/instances_train2017.json',
                                     data_prefix=dict(img='train2017/')))
val_dataloader = dict(dataset=dict(**coco, ann_file='annotations/instances_val2017.json',
                                   data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='CocoMetric', ann_file='data/coco/annotations/instances_val2017.json',
                     metric='bbox', format_only=False, backend_args=None)
test_evaluator = val_evaluator
