"""Built-in data sets (``shapes_train`` / ``shapes_val``, ``coco_2017_val_mlperf``) and your
own, named in the config (DATASETS.COCO, DATASETS.VOC)."""
