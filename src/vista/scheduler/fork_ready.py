"""Imported last by the workers' fork server (:data:`vista.scheduler.warm_start.PRELOAD`):
what the server does once its imports are done, before it forks any worker.

``gc.freeze()`` moves every object the imports created into the collector's permanent
generation, so a worker's garbage collections never write to those objects' headers: the
pages holding them stay shared with the server and the other workers instead of being
copied into each worker (the CPython documentation's advice for a pre-fork server).
"""

import gc

gc.freeze()
