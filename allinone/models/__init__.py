"""Neural networks of allinone."""
from allinone.models.fusion_cnn import FUSION_CNN_CONFIGS, FusionCNN, FusionCNNConfig

__all__ = ["FUSION_CNN_CONFIGS", "FusionCNN", "FusionCNNConfig"]
