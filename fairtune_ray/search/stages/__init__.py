"""The stages of a search, in the order the study runs them (``fairtune_ray.study``).

prepare -> tune -> confirm -> select -> baseline_lrs -> retrain_test -> publish; the report stage lives in
``fairtune_ray.reporting.stage``. Each stage is one module with a typed input and output from
:mod:`.types`; no stage module imports another (an import contract checks it).
"""
