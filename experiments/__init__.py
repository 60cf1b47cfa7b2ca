"""The experiment scripts (each one a module: ``python -m experiments.<name>``).

Each script trains the models of one study through the main job
(``advinv_jax.job.run``) at a scale (``--scale=tiny|cpu|paper``), takes
``--config.<field>=<value>`` overrides for every model it trains, and writes
``results.json`` and ``results.md`` into ``--workdir``.
"""
