"""Vista: federated parameter-efficient fine-tuning and pretrained model selection in FL."""

import os

__version__ = "0.1.0"

# Same seed, same numbers, whatever the number of threads (and so whatever
# scheduler.num_workers is): MKL's strict conditional-numerical-reproducibility mode makes
# its GEMMs bitwise independent of the thread count, at no measurable cost here. Set
# before any MKL call; inherited by worker processes; a user's own MKL_CBWR wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
