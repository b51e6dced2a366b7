"""The Transformer of "Attention Is All You Need" in Paddle: model, decoding, data and the Trainer task.

Importing this package registers the ``transformer`` model and the ``transformer`` family's task.
"""
from .decoding import beam_search, greedy_search
from .model import (
                    BOS_ID,
                    EOS_ID,
                    PAD_ID,
                    UNK_ID,
                    DecoderLayer,
                    EncoderLayer,
                    LearnedPositionalEncoding,
                    MultiHeadAttention,
                    PositionwiseFeedForward,
                    SinusoidalPositionalEncoding,
                    Transformer,
                    causal_mask,
                    padding_mask,
                    scaled_dot_product_attention,
)
from .task import TransformerTask, label_smoothed_nll

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "DecoderLayer", "EncoderLayer", "LearnedPositionalEncoding",
           "MultiHeadAttention", "PositionwiseFeedForward", "SinusoidalPositionalEncoding", "Transformer",
           "causal_mask", "padding_mask", "scaled_dot_product_attention", "beam_search", "greedy_search",
           "TransformerTask", "label_smoothed_nll"]
