"""Tokenizers for the text towers: picklable callables that run in DataLoader workers.

Every tokenizer maps a list of texts to fixed-length tensors (truncated and
padded to ``context_length``)::

    input_ids       (B, T) long
    attention_mask  (B, T) long, 1 on real tokens (specials included), 0 on padding
    offsets         (B, T, 2) long, [start, end) character offsets into each input
                    text; (-1, -1) on special and padding tokens
    word_ids        (B, T) long, index of the word a token belongs to (for
                    whole-word masking); -1 on special and padding tokens

:class:`WordPieceTokenizer` wraps a Hugging Face fast tokenizer (BERT
WordPiece, RoBERTa byte-level BPE, ...): its offsets and word ids come from the
tokenizer itself and are exact. :class:`ClipBpeTokenizer` wraps open_clip's CLIP
BPE tokenizer (see its docstring for what is exact).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from cxrkit.errors import InputError

NO_OFFSET = -1


def _check_texts(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"tokenizer expects strings, got {bad[0]} (use '' for an empty report)")
    return texts


class Tokenizer:
    """Base of the text-tower tokenizers: ``tokenizer(texts) -> dict of tensors`` (module doc).

    Attributes: ``context_length`` (T), ``vocab_size``, ``pad_id``, ``cls_id``
    (first token: [CLS], <s> or CLIP's start-of-text), ``sep_id`` (closing
    token: [SEP], </s> or end-of-text) and ``mask_id`` (None when the
    vocabulary has no mask token, as CLIP's).
    """

    context_length: int
    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int | None

    def __call__(self, texts: Sequence[str] | str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @property
    def special_ids(self) -> list[int]:
        """Ids never chosen for masking (pad, cls, sep, mask)."""
        ids = {self.pad_id, self.cls_id, self.sep_id, self.mask_id}
        return sorted(i for i in ids if i is not None)


def _wordpiece_from_vocab(path: Path, lowercase: bool):
    """A BERT fast tokenizer from a bare vocab.txt (the same on transformers 4 and 5)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    wordpiece = BertWordPieceTokenizer(str(path), lowercase=lowercase)
    return PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,  # the Rust tokenizer with BERT's post-processor
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


class WordPieceTokenizer(Tokenizer):
    """A Hugging Face fast tokenizer read from disk (a model directory or a ``vocab.txt``).

    Takes: ``path`` (a directory with tokenizer files, or a WordPiece
    ``vocab.txt`` when ``vocab_file=True``), ``context_length``, ``lowercase``
    (vocab files only; a directory's own setting wins).
    Raises: InputError when the files are missing or not a fast tokenizer.
    """

    def __init__(
        self,
        path: str | Path,
        context_length: int,
        vocab_file: bool = False,
        lowercase: bool = True,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after use
        path = Path(path)
        self.path = path
        self.context_length = context_length
        try:
            if vocab_file:
                if not path.is_file():
                    raise InputError(f"{path}: no such vocabulary file (text.vocab)")
                backend = _wordpiece_from_vocab(path, lowercase)
            else:
                from transformers import AutoTokenizer

                backend = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except InputError:
            raise
        except Exception as exc:  # transformers raises OSError, ValueError, TypeError...
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{path}: cannot load a tokenizer ({first})") from exc
        if not getattr(backend, "is_fast", False):
            raise InputError(
                f"{path}: the tokenizer is not a fast (Rust) tokenizer; character offsets "
                "need one (add tokenizer.json to the directory)"
            )
        self.backend = backend
        self.vocab_size = len(backend)
        self.pad_id = self._required_id("pad_token_id")
        self.cls_id = self._required_id("cls_token_id", "bos_token_id")
        self.sep_id = self._required_id("sep_token_id", "eos_token_id")
        self.mask_id = backend.mask_token_id

    def _required_id(self, *names: str) -> int:
        for name in names:
            value = getattr(self.backend, name, None)
            if value is not None:
                return int(value)
        raise InputError(f"{self.path}: the tokenizer defines no {' / '.join(names)}")

    def __call__(self, texts: Sequence[str] | str) -> dict[str, torch.Tensor]:
        """Tokenise, truncate and pad to ``context_length`` (module doc for the outputs)."""
        texts = _check_texts(texts)
        enc = self.backend(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_offsets_mapping=True,
            return_attention_mask=True,
            return_token_type_ids=False,
            return_tensors="np",  # numpy -> torch without copying nested lists
        )
        shape = (len(texts), self.context_length)
        word_ids = torch.tensor(
            [[NO_OFFSET if w is None else w for w in enc.word_ids(i)] for i in range(len(texts))],
            dtype=torch.long,
        ).reshape(shape)
        offsets = torch.from_numpy(enc["offset_mapping"]).long().reshape(*shape, 2)
        offsets[word_ids < 0] = NO_OFFSET
        return {
            "input_ids": torch.from_numpy(enc["input_ids"]).long().reshape(shape),
            "attention_mask": torch.from_numpy(enc["attention_mask"]).long().reshape(shape),
            "offsets": offsets,
            "word_ids": word_ids,
        }


class ClipBpeTokenizer(Tokenizer):
    """open_clip's CLIP BPE tokenizer (``open_clip.tokenizer.SimpleTokenizer``), with offsets.

    ``input_ids`` equal ``open_clip.tokenize`` exactly (same cleaning: ftfy,
    HTML unescape, whitespace collapse, lowercase; same truncation: start token,
    the first T-2 tokens, end token). Pads are 0 (CLIP's own padding id).

    Words are the matches of CLIP's pre-tokenizer regex on the cleaned text
    (letters, a single digit, or a run of other symbols), so ``word_ids`` are
    exact for every input. ``offsets`` come from running the same regex on the
    original text and decoding each BPE piece to its bytes: they are exact
    whenever cleaning only lowercases and collapses whitespace (plain reports);
    when ftfy or HTML unescaping changes the tokens (e.g. ``&amp;`` becomes
    ``&``), every offset of that text is (-1, -1), as it is when lowercasing
    changes the text's length (U+0130). Ids and word ids stay exact.
    A piece that splits a multi-byte character covers the whole character.
    CLIP has no mask token: ``mask_id`` is None.
    """

    def __init__(self, context_length: int = 77) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.backend = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self.vocab_size = int(self.backend.vocab_size)
        self.pad_id = 0
        self.cls_id = int(self.backend.sot_token_id)
        self.sep_id = int(self.backend.eot_token_id)
        self.mask_id = None

    def _pieces(self, text: str) -> list[tuple[int, int, int, int]]:
        """(token id, word index, start, end) for every BPE piece of ``text`` (already lowercase)."""
        backend = self.backend
        out = []
        for word, match in enumerate(backend.pat.finditer(text)):
            token = match.group()
            unicode_token = "".join(backend.byte_encoder[b] for b in token.encode("utf-8"))
            # byte offset -> character index inside the word
            char_of_byte = [i for i, ch in enumerate(token) for _ in ch.encode("utf-8")]
            byte = 0
            for piece in backend.bpe(unicode_token).split(" "):
                width = len(piece.removesuffix("</w>"))  # one unicode char per byte
                start = match.start() + char_of_byte[byte]
                end = match.start() + char_of_byte[byte + width - 1] + 1
                out.append((backend.encoder[piece], word, start, end))
                byte += width
        return out

    def _align(self, text: str) -> tuple[list[tuple[int, int, int, int]], bool]:
        """Pieces of ``text`` as open_clip tokenises it, and whether their offsets are valid."""
        cleaned_text = self.backend.clean_fn(text)
        lowered = text.lower()
        # Offsets into the lowercased text are offsets into the text when lowercasing
        # keeps every character in place (not so for e.g. U+0130, which becomes two).
        if len(lowered) == len(text):
            raw = self._pieces(lowered)
            if " ".join(lowered.split()) == cleaned_text:
                # Cleaning only lowercased and collapsed whitespace, which the pre-tokenizer
                # regex skips anyway: the pieces are open_clip's (one pass, the common case).
                return raw, True
            cleaned = self._pieces(cleaned_text)
            if [p[0] for p in raw] == [p[0] for p in cleaned]:
                return raw, True
            return cleaned, False
        return self._pieces(cleaned_text), False

    def __call__(self, texts: Sequence[str] | str) -> dict[str, torch.Tensor]:
        """Tokenise like ``open_clip.tokenize`` and add offsets and word ids (class doc)."""
        texts = _check_texts(texts)
        length = self.context_length
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.long)
        offsets = torch.full((len(texts), length, 2), NO_OFFSET, dtype=torch.long)
        word_ids = torch.full((len(texts), length), NO_OFFSET, dtype=torch.long)
        for row, text in enumerate(texts):
            body, aligned = self._align(text)
            body = body[: length - 2]
            tokens = [self.cls_id] + [p[0] for p in body] + [self.sep_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
            if body:
                word_ids[row, 1 : 1 + len(body)] = torch.tensor([p[1] for p in body])
                if aligned:
                    offsets[row, 1 : 1 + len(body)] = torch.tensor([p[2:] for p in body])
        return {"input_ids": ids, "attention_mask": mask, "offsets": offsets, "word_ids": word_ids}
