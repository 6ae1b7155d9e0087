"""seq-JEPA model: encoders, the aggregator/predictor parts, and the model itself (no distributed code here)."""

from trainer.model.build import build_model
from trainer.model.encoders import build_encoder, encoder_blocks
from trainer.model.seq_jepa import SeqJEPA, SeqJEPAOutput

__all__ = ["SeqJEPA", "SeqJEPAOutput", "build_encoder", "build_model", "encoder_blocks"]
