"""LVIS detection track: an mmdet plugin on the shared activation module.

- ``losses.py``: box-classification losses on ``lt_bench.activations`` (torch only);
- ``registry.py``: registers them, and the classifier initialiser, in mmdet's registries
  (configs load it with ``custom_imports = dict(imports=['lt_bench.detection.registry'])``);
- ``categories.py``: LVIS category statistics; ``evaluation.py``: the lvis API;
- ``lvis_compat.py``: the NumPy shim for lvis 0.5.3; ``runner.py``: run.py's task=lvis;
- ``toy.py``: a generated long-tailed detection set (coloured shapes) for the learning check;
- ``grad_stats.py`` (torch only), ``grad_hook.py`` and ``analysis/positive_gradients.py``: the mean positive
  gradient per category during training (GOL's Figure 7): a collector the losses report to, the
  mmengine hook that writes it, and the plot of two runs;
- ``fast_eval.py``: lvis-api's numbers without its image x category loop; ``results_file.py`` and
  ``lvis_eval_cli.py``: ``lt-bench lvis-eval``, a results file read into columns and evaluated.

mmdet, mmcv and mmengine come with the detection extra (``make det``); nothing here is
imported by the classification track.
"""
