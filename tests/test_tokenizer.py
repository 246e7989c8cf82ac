"""The CLIP tokenizer against transformers' CLIPTokenizer, and against original CLIP where they differ."""

from __future__ import annotations

import gzip

import pytest
import torch

from latentdiff.tokenizer import DEFAULT_VOCAB, CLIPTokenizer, TokenizerError, clean

CORPUS = [
    "a photograph of an astronaut riding a horse",
    "A Red Circle To The LEFT of a blue square",
    "",
    "   ",
    "\t\n",
    "hello\tworld\nnew   line",
    "It's a dog; it's not a cat. Don't! They'LL go, we've been, I'm here, you'd see",
    "1234.5 1st 2nd 3rd 100% $9.99 #hashtag @user 3x3 1080p 8k",
    "!!!???...---***///",
    "(masterpiece:1.2), [best quality], {ultra-detailed}, <lora:foo:0.8>",
    "café naïve résumé Ångström façade",
    "東京の夜景 北京 서울",
    "🐱🐶 a cat emoji 👩‍🚀 and a family 👨‍👩‍👧",
    "שלום עולם مرحبا بالعالم",
    "Привет мир, Ελληνικά",
    "तुम कैसे हो",
    "mixed日本語and English",
    "a <|endoftext|> inside",
    "<|startoftext|>",
    "e-mail: someone@example.com, url https://example.com/a?b=c",
    "C++ and C# and F#; x**2 + y^2 = z_3",
    "tabs\tand  double  spaces",
    "UPPERCASE ONLY PROMPT",
    "snake_case camelCase kebab-case",
    "em dash — en dash – ellipsis …",
    "trailing space ",
    " leading space",
    "a" * 300,
    "highly detailed, " * 30,
    "a photo of a cat " * 20 + "and finally a dog",
    "0123456789" * 5,
    "é" * 40,
]
# Where transformers 5.x (no ftfy, no HTML unescaping) and original CLIP part ways: we follow CLIP.
CLIP_CLEANING = {
    "&amp; fish &amp;amp; chips": "& fish & chips",  # HTML entities, unescaped twice
    "&lt;3 &quot;quoted&quot;": '<3 "quoted"',
    "ﬁsh ﬂower": "fish flower",  # Latin ligatures split by ftfy
    "ｆｕｌｌｗｉｄｔｈ": "fullwidth",  # ftfy folds full-width letters
    "mojibake: cafÃ©": "mojibake: café",
    "’curly’ “quotes”": "'curly' \"quotes\"",  # ftfy straightens quotes  # UTF-8 read as Latin-1, repaired by ftfy
}


@pytest.fixture(scope="module")
def ours() -> CLIPTokenizer:
    return CLIPTokenizer.default()


@pytest.fixture(scope="module")
def theirs(tmp_path_factory, ours):
    from transformers import CLIPTokenizer as HFTokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    ours.save(folder)
    return HFTokenizer.from_pretrained(folder)


def test_vocabulary_is_the_real_clip_one(ours):
    assert len(ours.encoder) == 49408
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (49406, 49407, 49407)
    assert ours.encode("a photograph of an astronaut riding a horse") == [320, 8853, 539, 550, 18376, 6765, 320, 4558]


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_encode_matches_transformers(ours, theirs, text):
    assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids


def test_padded_batch_matches_transformers(ours, theirs):
    mine = ours(CORPUS)
    ref = theirs(CORPUS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert torch.equal(mine.input_ids, ref.input_ids)
    assert torch.equal(mine.attention_mask, ref.attention_mask)


@pytest.mark.parametrize("text,cleaned", CLIP_CLEANING.items())
def test_original_clip_cleaning_where_transformers_skips_it(ours, theirs, text, cleaned):
    assert clean(text) == cleaned.lower()
    assert ours.encode(text) == ours.encode(cleaned)
    # Documents why we do not compare these with transformers: it tokenizes the raw string.
    assert ours.encode(text) != theirs(text, add_special_tokens=False).input_ids


def test_bundled_file_and_saved_folder_give_the_same_tokenizer(ours, tmp_path):
    ours.save(tmp_path)
    again = CLIPTokenizer.from_folder(tmp_path)
    assert again.encoder == ours.encoder and again.merges == ours.merges
    assert torch.equal(again(CORPUS).input_ids, ours(CORPUS).input_ids)


def test_sd2_folder_pads_with_its_own_pad_token(ours, tmp_path):
    ours.save(tmp_path)
    (tmp_path / "special_tokens_map.json").write_text('{"pad_token": "!"}')
    sd2 = CLIPTokenizer.from_folder(tmp_path)
    assert sd2.pad_token_id == 0
    ids = sd2("a cat").input_ids[0]
    assert ids[:4].tolist() == [49406, 320, 2368, 49407] and set(ids[4:].tolist()) == {0}


@pytest.mark.parametrize("text", ["a red circle to the left of a blue square", "café 東京 🐱 <3 it's 1234"])
def test_decode_inverts_encode_up_to_cleaning(ours, text):
    assert ours.decode(ours.encode(text)).replace(" ", "") == clean(text).replace(" ", "")


def test_truncation_is_reported(ours):
    short, long = "a cat", "a red circle " * 30  # 90 tokens
    out = ours([short, long])
    assert out.num_truncated == [0, 15]
    assert out.input_ids[1, -1].item() == ours.eos_token_id
    warning = ours.truncation_warning(out, [short, long])
    dropped = "a red circle " * 4 + "a red circle"
    assert warning == f'prompt 1 is 90 tokens, 15 over the 75-token limit; dropped: "{dropped}"'
    assert ours.truncation_warning(ours(short), short) is None


def test_bad_input_and_bad_files_fail_with_one_clear_line(tmp_path):
    tok = CLIPTokenizer.default()
    with pytest.raises(TokenizerError, match="prompts must be a str or a list of str"):
        tok(["ok", 3])
    with pytest.raises(TokenizerError, match="a prompt must be a str, got bytes"):
        tok.encode(b"bytes")
    with pytest.raises(TokenizerError, match=r"nowhere/vocab.json: cannot read"):
        CLIPTokenizer.from_folder(tmp_path / "nowhere")
    tok.save(tmp_path / "tok")
    (tmp_path / "tok" / "vocab.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"tok/vocab.json: not valid JSON"):
        CLIPTokenizer.from_folder(tmp_path / "tok")
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(b"header\nonly a few\nlines\n"))
    with pytest.raises(TokenizerError, match=r"broken.txt.gz: expected 48894 merge lines"):
        CLIPTokenizer.from_bpe_gz(broken)
    (tmp_path / "cut.gz").write_bytes(DEFAULT_VOCAB.read_bytes()[:1000])
    with pytest.raises(TokenizerError, match=r"cut.gz: cannot read the BPE vocabulary"):
        CLIPTokenizer.from_bpe_gz(tmp_path / "cut.gz")
