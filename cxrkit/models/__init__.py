"""Towers from typed configs, never from a hub.

- ``vision``: the 1-channel timm ViT (``VisionConfig``) and MAE helpers.
- ``text``: text towers (``TextConfig``, ``build_text_tower``); ``tokenizers``: their
  picklable tokenizers with character offsets and word ids.
- ``registry``: named model configs (``configs/*.json``: image + text tower + embed_dim).
- ``init``: initialisation from timm / MAE / open_clip weight files on disk.
- ``decoders``: MAE's decoder; ``checkpoint``: checkpoint files (config.json + weights).
"""
