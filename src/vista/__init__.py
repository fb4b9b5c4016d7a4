"""Vista: federated parameter-efficient fine-tuning and pretrained model selection in FL."""

__version__ = "0.1.0"
