"""Hugging Face models with random weights from a config, for problem files: ``[model]
factory = "ctrlsparse.models.hf:bert_classifier"`` with the config in ``[model] kwargs``.

Nothing is downloaded. ``transformers`` is not a dependency of ctrlsparse: install it to use these.
"""

from __future__ import annotations

from torch import nn


def bert_classifier(**config) -> nn.Module:
    """``BertForSequenceClassification(BertConfig(**config))`` with random weights.

    Examples:
        >>> model = bert_classifier(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                         intermediate_size=64, vocab_size=100, num_labels=3)
        >>> model.classifier.out_features
        3
    """
    try:
        from transformers import BertConfig, BertForSequenceClassification
    except ImportError as error:
        raise ImportError(
            "ctrlsparse.models.hf:bert_classifier needs Hugging Face transformers: pip install transformers"
        ) from error
    return BertForSequenceClassification(BertConfig(**config))
