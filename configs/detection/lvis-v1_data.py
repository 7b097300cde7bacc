# mmdet's LVIS v1 instance data (repeat-factor sampling 1e-3, multi-scale training, LVISMetric),
# alone: a detector's data_config, for mmdet models whose own config carries COCO data.
_base_ = 'mmdet::_base_/datasets/lvis_v1_instance.py'
