"""Tiny KerasHub presets with random weights, saved to local folders as a downloaded preset would be.

Shared by the KerasHub branch tests and the zero-shot tests: a 2-layer BERT
with a 50-word vocabulary, a 2-layer ViT on 16x16 images, a tiny CLIP
(both towers, its BPE tokenizer and image converter) and a tiny Whisper
(backbone and audio converter, for 8 kHz clips of up to 1 s). Building all three
takes a few seconds; nothing touches the network.
"""
from __future__ import annotations

import keras_hub

WORDS = ("red", "green", "blue", "ball", "box", "toy", "small", "big", "a", "the", "photo", "of", "cat", "dog", "bird")

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS] + [f"w{i}" for i in range(30)]

HIDDEN = 16


def save_bert(folder) -> str:
    """A BertBackbone (2 layers, hidden 16) and BertTokenizer saved to `folder`."""
    keras_hub.models.BertBackbone(
        vocabulary_size=len(BERT_VOCAB), num_layers=2, num_heads=2, hidden_dim=HIDDEN, intermediate_dim=32,
        max_sequence_length=32,
    ).save_to_preset(str(folder))
    keras_hub.models.BertTokenizer(vocabulary=BERT_VOCAB).save_to_preset(str(folder))
    return str(folder)


def save_vit(folder) -> str:
    """A ViTBackbone (2 layers, hidden 16, 16x16 images in 4x4 patches) and its image converter saved to `folder`."""
    keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=HIDDEN, mlp_dim=32,
    ).save_to_preset(str(folder))
    keras_hub.layers.ViTImageConverter(image_size=(16, 16), scale=1 / 255.0).save_to_preset(str(folder))
    return str(folder)


def clip_tokenizer() -> keras_hub.models.CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary holds `WORDS` whole (with CLIP's end-of-word marker).

    The start and end tokens take the last two ids, as in CLIP's own vocabulary: CLIP's text tower pools
    at the largest token id, which must be the end token for every prompt to get its own embedding.
    """
    letters = sorted({letter for word in WORDS for letter in word})
    vocabulary = {}
    for token in [*letters, *(f"{letter}</w>" for letter in letters), *(f"{word}</w>" for word in WORDS)]:
        vocabulary.setdefault(token, len(vocabulary))
    merges = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            vocabulary.setdefault(pieces[0] + pieces[1], len(vocabulary))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    for token in ("<|startoftext|>", "<|endoftext|>"):
        vocabulary[token] = len(vocabulary)
    return keras_hub.models.CLIPTokenizer(vocabulary=vocabulary, merges=list(dict.fromkeys(merges)))


def save_clip(folder) -> str:
    """A tiny CLIPBackbone (both towers: 2 layers, hidden 16, projection 8), tokenizer and image converter."""
    tokenizer = clip_tokenizer()
    keras_hub.models.CLIPBackbone(
        vision_encoder=keras_hub.models.CLIPVisionEncoder(
            patch_size=4, hidden_dim=HIDDEN, num_layers=2, num_heads=2, intermediate_dim=32, image_shape=(16, 16, 3)
        ),
        text_encoder=keras_hub.models.CLIPTextEncoder(
            vocabulary_size=tokenizer.vocabulary_size(), embedding_dim=HIDDEN, hidden_dim=HIDDEN, num_layers=2,
            num_heads=2, intermediate_dim=32, max_sequence_length=12,
        ),
        projection_dim=8,
    ).save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    keras_hub.layers.CLIPImageConverter(image_size=(16, 16), scale=1 / 255.0).save_to_preset(str(folder))
    return str(folder)


WHISPER_SAMPLE_RATE = 8000


def save_whisper(folder) -> str:
    """A WhisperBackbone (2 layers, hidden 16, 16 mel bins) and its audio converter (8 kHz, 1 s) saved to `folder`.

    The converter pads clips to 1 s: 250 log-mel frames (hop 32), which the encoder halves to 125.
    """
    keras_hub.models.WhisperBackbone(
        vocabulary_size=60, num_layers=2, num_heads=2, hidden_dim=HIDDEN, intermediate_dim=32, num_mels=16,
        max_encoder_sequence_length=256, max_decoder_sequence_length=8,
    ).save_to_preset(str(folder))
    keras_hub.layers.WhisperAudioConverter(
        num_mels=16, num_fft_bins=64, stride=32, sampling_rate=WHISPER_SAMPLE_RATE, max_audio_length=1,
    ).save_to_preset(str(folder))
    return str(folder)
