"""Multimodal (text + image) classification: ERNIE-M + ResNet NetWork, data readers, task."""
from .network import EncoderCNN, NetWork  # noqa: F401  (registers ernie_m_resnet)
from .task import MultimodalTask  # noqa: F401  (registers the multimodal task)
