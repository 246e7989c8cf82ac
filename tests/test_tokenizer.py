"""The CLIP tokenizer against transformers' CLIPTokenizer, and against original CLIP where the two differ."""

from __future__ import annotations

import gzip
import json
import unicodedata

import pytest
import torch

import latentdiff.tokenizer as tokenizer_module
from latentdiff.tokenizer import DEFAULT_VOCAB, CLIPTokenizer, TokenizerError, clean

LONG = "a red circle " * 30  # 90 tokens, 15 over the 75 that fit
CORPUS = [
    "a photograph of an astronaut riding a horse",
    "A Red Circle To The LEFT of a blue square",
    "UPPERCASE ONLY PROMPT",
    "",
    "   ",
    "\t\n",
    " \n \t ",
    "hello\tworld\nnew   line\r\nand\u00a0nbsp\u3000ideographic space",
    "It's a dog; it's not a cat. Don't! They'LL go, we'VE been, I'M here, you'd see",
    "ab'cd 'quoted' a'",
    "1234.5 1st 2nd 3rd 100% $9.99 #hashtag @user 3x3 1080p 8k",
    "½ cup, 3½, ¹²³, Ⅻ, ١٢٣",  # ftfy leaves these alone, so transformers agrees with CLIP
    "!!!???...---***///",
    "(masterpiece:1.2), [best quality], {ultra-detailed}, <lora:foo:0.8>",
    "café naïve résumé Ångström façade Straße İstanbul",
    "e\u0301 (e + combining acute, NFC makes it é)",
    "東京の夜景 北京 서울",
    "🐱🐶 a cat emoji 👩‍🚀 and a family 👨‍👩‍👧 🇯🇵🏳️‍🌈",
    "שלום עולם مرحبا بالعالم",
    "Привет мир, Ελληνικά",
    "तुम कैसे हो",
    "mixed日本語and English",
    "a <|endoftext|> inside",
    "x<|endoftext|>y",
    "<|startoftext|>",
    "a <|startoftext|> b",
    "e-mail: someone@example.com, url https://example.com/a?b=c",
    "C++ and C# and F#; x**2 + y^2 = z_3 <3",
    "snake_case camelCase kebab-case",
    "em dash — en dash – ellipsis …",
    "\u200bzero width space",
    "trailing space ",
    " leading space",
    "a" * 300,
    "highly detailed, " * 30,
    LONG,
    "a photo of a cat " * 20 + "and finally a dog",
    "0123456789" * 5,
    "é" * 40,
]
# Where transformers 5.x (NFC + whitespace + lower case only: no ftfy, no HTML unescaping, per-character
# lower case, case-sensitive special tokens) and original CLIP part ways, we follow CLIP. Found by running
# both (and openai/CLIP's own simple_tokenizer) over these strings. text -> what CLIP's cleaning makes of it.
CLIP_CLEANING = {
    "&amp; fish &amp;amp; chips": "& fish & chips",  # HTML entities, unescaped twice
    "&lt;3 &quot;quoted&quot; &#39;x&#39; &copy;": "<3 \"quoted\" 'x' ©",
    "a&nbsp;b": "a b",  # &nbsp; -> U+00A0, which is whitespace
    "ﬁsh ﬂower ĳ": "fish flower ij",  # ftfy splits Latin ligatures
    "ｆｕｌｌｗｉｄｔｈ ﾊﾝｶｸ": "fullwidth ハンカク",  # ftfy folds full- and half-width forms
    "mojibake: cafÃ© Ã¼ber": "mojibake: café über",  # UTF-8 read as Latin-1, repaired by ftfy
    "’curly’ “quotes”": "'curly' \"quotes\"",  # ftfy straightens quotes
    "\x1b[31mred\x1b[0m \ufeffbom a\x00b": "red bom ab",  # ftfy drops terminal escapes and control characters
    "<|ENDOFTEXT|> x": "<|endoftext|> x",  # CLIP lower-cases first, so any case is the EOS token
    "ΟΔΟΣ": "οδος",  # Python's lower() ends a Greek word with final sigma ς; tokenizers gives σ
}


@pytest.fixture(scope="module")
def ours() -> CLIPTokenizer:
    return CLIPTokenizer.default()


@pytest.fixture(scope="module")
def theirs(tmp_path_factory, ours):
    from transformers import CLIPTokenizer as HFTokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    ours.save(folder)
    tok = HFTokenizer.from_pretrained(folder)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.model_max_length) == (49406, 49407, 49407, 77)
    return tok


def test_vocabulary_is_the_real_clip_one(ours):
    assert len(ours.encoder) == 49408 and len(ours.merges) == 48894
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, ours.model_max_length) == (49406, 49407, 49407, 77)
    # Ids independent of transformers: SD 1.x's well-known ids, and the byte table's order ("Ġ" is the space byte).
    assert ours.encode("a photograph of an astronaut riding a horse") == [320, 8853, 539, 550, 18376, 6765, 320, 4558]
    assert (ours.encoder["!"], ours.encoder["Ġ"], ours.encoder["!</w>"]) == (0, 220, 256)


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_encode_matches_transformers(ours, theirs, text):
    assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids


def test_padded_batch_matches_transformers(ours, theirs):
    mine = ours(CORPUS)
    ref = theirs(CORPUS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert mine.input_ids.shape == (len(CORPUS), 77) and mine.input_ids.dtype == torch.long
    assert torch.equal(mine.input_ids, ref.input_ids)
    assert torch.equal(mine.attention_mask, ref.attention_mask)


def test_long_prompt_keeps_its_first_75_tokens_and_ends_with_eos(ours):
    row = ours(LONG).input_ids[0].tolist()
    assert row == [ours.bos_token_id, *ours.encode(LONG)[:75], ours.eos_token_id]


@pytest.mark.parametrize("text,cleaned", CLIP_CLEANING.items())
def test_original_clip_cleaning_where_transformers_skips_it(ours, theirs, text, cleaned):
    assert clean(text) == cleaned.lower()
    assert ours.encode(text) == ours.encode(cleaned)
    # Why these are not compared with transformers: it tokenizes the uncleaned string. If this starts
    # failing, transformers now cleans like CLIP and the string can move to CORPUS.
    assert ours.encode(text) != theirs(text, add_special_tokens=False).input_ids


def test_specific_clip_cleaning_results(ours):
    assert ours.encode("&amp;") == [ours.encoder["&</w>"]]
    assert ours.encode("&lt;3") == [ours.encoder["<</w>"], ours.encoder["3</w>"]]
    assert clean("ﬁ") == "fi" == unicodedata.normalize("NFKC", "ﬁ") and ours.encode("ﬁ") == [ours.encoder["fi</w>"]]
    assert ours.encode("<|EndOfText|>") == [ours.eos_token_id]
    assert ours.encode("\u0345") == []  # CLIP's IGNORECASE regex finds no word in it; transformers gives 2 ids
    assert clean("  Two\t\tSPACES \n") == "two spaces"


def test_without_ftfy_html_whitespace_and_case_are_still_cleaned(monkeypatch):
    monkeypatch.setattr(tokenizer_module, "_fix_text", tokenizer_module._nfc)
    assert clean(" &amp;amp; ﬁ  E\u0301 ") == "& ﬁ é"  # the ligature now survives: ftfy's repair is gone


@pytest.mark.parametrize(
    "map_pad,config_pad,pad_id",
    [("!", "<|endoftext|>", 0), (None, "!", 0), ("<|endoftext|>", "!", 49407)],
    ids=["sd2-layout", "config-only", "map-wins"],
)
def test_sd2_folder_pads_with_its_own_pad_token(ours, tmp_path, map_pad, config_pad, pad_id):
    from transformers import CLIPTokenizer as HFTokenizer

    # SD 2.x's real folder says "!" in special_tokens_map.json and EOS in tokenizer_config.json;
    # transformers lets the former win when both have one.
    ours.save(tmp_path)
    for name, pad in (("special_tokens_map.json", map_pad), ("tokenizer_config.json", config_pad)):
        config = {k: v for k, v in json.loads((tmp_path / name).read_text()).items() if k != "pad_token"}
        (tmp_path / name).write_text(json.dumps(config if pad is None else config | {"pad_token": pad}))
    sd2, ref = CLIPTokenizer.from_folder(tmp_path), HFTokenizer.from_pretrained(tmp_path)
    assert sd2.pad_token_id == ref.pad_token_id == pad_id
    ids = ref(["a cat", LONG], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(sd2(["a cat", LONG]).input_ids, ids)


def test_bundled_file_saved_folder_and_transformers_folder_give_the_same_tokenizer(ours, theirs, tmp_path):
    ours.save(tmp_path / "ours")
    assert not [p.name for p in (tmp_path / "ours").iterdir() if p.name.endswith(".tmp")]  # atomic writes
    from_files = CLIPTokenizer.from_files(tmp_path / "ours" / "vocab.json", tmp_path / "ours" / "merges.txt")
    theirs.save_pretrained(tmp_path / "theirs")  # transformers 5.x writes tokenizer.json only
    from_json = CLIPTokenizer.from_folder(tmp_path / "theirs")
    for other in (from_files, from_json):
        assert other.encoder == ours.encoder and other.merges == ours.merges
        assert other.pad_token_id == ours.pad_token_id
        assert torch.equal(other(CORPUS).input_ids, ours(CORPUS).input_ids)


@pytest.mark.parametrize("text", ["a red circle to the left of a blue square", "an astronaut riding a horse on mars"])
def test_decode_inverts_encode_for_clean_ascii(ours, text):
    assert ours.decode(ours.encode(text)) == text
    assert ours.decode(ours(text).input_ids[0, : len(ours.encode(text)) + 2]) == f"<|startoftext|>{text} <|endoftext|>"


@pytest.mark.parametrize("text", ["café 東京 🐱 <3 it's 1234", "A Red, Circle!!"])
def test_decode_inverts_encode_up_to_cleaning_and_word_spacing(ours, text):
    assert ours.decode(ours.encode(text)).replace(" ", "") == clean(text).replace(" ", "")


def test_truncation_is_counted_and_reported(ours):
    short = "a cat"
    out = ours([short, LONG, short])
    assert out.num_truncated == [0, 15, 0]
    assert ours(short).num_truncated == [0] and ours(LONG, context_length=10).num_truncated == [90 - 8]
    dropped = "a red circle " * 4 + "a red circle"
    expected = f'prompt 1 is 90 tokens, 15 over the 75-token limit; dropped: "{dropped}"'
    assert ours.truncation_warning(out, [short, LONG, short]) == expected
    assert ours.truncation_warning(ours(short), short) is None


def test_bad_input_fails_with_one_clear_line(ours):
    with pytest.raises(TypeError, match="^prompt 1 is a int, not a str$"):
        ours(["ok", 3])
    with pytest.raises(TypeError, match="^prompts must be a str or a list of str, not NoneType$"):
        ours(None)
    with pytest.raises(TypeError, match="^a prompt must be a str, not bytes$"):
        ours.encode(b"bytes")
    with pytest.raises(ValueError, match="context_length must be an int of at least 2"):
        ours("a cat", context_length=1)
    with pytest.raises(ValueError, match=r"token id 49408 is not in the vocabulary \(0..49407\)"):
        ours.decode([320, 49408])


def test_missing_or_corrupt_files_name_the_file(ours, tmp_path):
    with pytest.raises(TokenizerError, match=r"nowhere/vocab.json: cannot read \(No such file"):
        CLIPTokenizer.from_folder(tmp_path / "nowhere")
    folder = tmp_path / "tok"
    ours.save(folder)
    merges = (folder / "merges.txt").read_text()
    (folder / "merges.txt").write_text(merges.replace("\ni n\n", "\ni n x\n", 1))
    with pytest.raises(TokenizerError, match=r"tok/merges.txt: line \d+ is not a merge of two symbols: 'i n x'"):
        CLIPTokenizer.from_folder(folder)
    (folder / "merges.txt").write_text(merges)
    (folder / "vocab.json").write_text(json.dumps({k: v for k, v in ours.encoder.items() if k != "<|endoftext|>"}))
    with pytest.raises(TokenizerError, match=r"tok/vocab.json with merges.txt: .*no '<\|endoftext\|>' token"):
        CLIPTokenizer.from_folder(folder)
    (folder / "vocab.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"tok/vocab.json: is not valid JSON"):
        CLIPTokenizer.from_folder(folder)
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(b"header\nonly a few\nlines\n"))
    with pytest.raises(TokenizerError, match=r"broken.txt.gz: has 3 merge lines, CLIP's vocabulary needs 48894"):
        CLIPTokenizer.from_bpe_gz(broken)
    (tmp_path / "cut.gz").write_bytes(DEFAULT_VOCAB.read_bytes()[:1000])
    with pytest.raises(TokenizerError, match=r"cut.gz: cannot read as a gzipped BPE vocabulary"):
        CLIPTokenizer.from_bpe_gz(tmp_path / "cut.gz")
    (tmp_path / "plain.txt").write_text("not gzip")
    with pytest.raises(TokenizerError, match=r"plain.txt: cannot read as a gzipped BPE vocabulary"):
        CLIPTokenizer.from_bpe_gz(tmp_path / "plain.txt")
