from vista.models.hub import ModelNotFoundError, ModelSpec, load_classifier, load_tokenizer

__all__ = ["ModelNotFoundError", "ModelSpec", "load_classifier", "load_tokenizer"]
