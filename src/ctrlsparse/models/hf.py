"""Hugging Face models with random weights from a config, for problem files: ``[model]
factory = "ctrlsparse.models.hf:bert_classifier"`` with the config in ``[model] kwargs``, or
``[model] name = "llama"`` (:func:`llama`, sized by ``[model] kwargs``).

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


def llama(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 172,
) -> nn.Module:
    """A ``LlamaForCausalLM`` with random weights, for ``[model] name = "llama"``.

    ``input_shape`` is ``(seq_len,)`` (the longest sequence it must place) and
    ``num_classes`` the vocabulary size, both from the data set; the other arguments come
    from ``[model] kwargs``: the residual width, decoder layers, query heads, key-value
    heads (grouped-query attention when fewer than ``heads``) and the SwiGLU width.

    Raises:
        ValueError: ``heads`` does not divide ``hidden``, or ``kv_heads`` does not divide ``heads``.

    Examples:
        >>> model = llama((32,), 300, hidden=32, layers=1, heads=4, kv_heads=2, intermediate=64)
        >>> model.config.num_key_value_heads, model.lm_head.out_features
        (2, 300)
    """
    if hidden % heads:
        raise ValueError(f"llama: heads = {heads} must divide hidden = {hidden}")
    if heads % kv_heads:
        raise ValueError(f"llama: kv_heads = {kv_heads} must divide heads = {heads}")
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as error:
        raise ImportError(
            "[model] name = 'llama' needs Hugging Face transformers: pip install 'ctrlsparse[lm]'"
        ) from error
    config = LlamaConfig(
        vocab_size=num_classes,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        max_position_embeddings=input_shape[0],
        use_cache=False,  # training and evaluation score whole windows; a cache only costs memory
    )
    return LlamaForCausalLM(config)
