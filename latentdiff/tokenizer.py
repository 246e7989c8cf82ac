"""CLIP's byte-level BPE tokenizer: text -> token ids, as SD's text encoder was trained to read them.

Byte-level BPE works on the UTF-8 bytes of the text, so every string (emoji, CJK, typos) has an
encoding and there is no "unknown" token. The vocabulary and merge files are text with symbols
separated by spaces, so each of the 256 byte values first gets a printable stand-in character (the
byte-to-unicode table): printable Latin-1 bytes stand for themselves, while the space and control
bytes borrow characters from U+0100 upward (the space byte becomes "Ġ"). BPE then repeatedly merges
the adjacent pair of symbols that comes first in the merge list, until no listed pair is left.

CLIP appends `</w>` to the last symbol of every word, so "cat</w>" (a word, or the end of one) and
"cat" (the start of "category") are different tokens; decoding turns `</w>` back into a space.

Text is cleaned as the original CLIP code does (ftfy, HTML unescaping twice, whitespace collapsed,
lower case), split into words by CLIP's regex, then BPE'd word by word. A prompt becomes
BOS + tokens + EOS, truncated to the context length (77) with EOS kept last, then padded.
"""

from __future__ import annotations

import gzip
import html
import json
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import regex
import torch


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


try:
    from ftfy import fix_text as _fix_text
except ImportError:
    # ftfy is optional. Without it only its final step (NFC) is kept, so mojibake ("cafÃ©"), ligatures
    # ("ﬁ"), full-width letters, curly quotes and control characters reach BPE unrepaired and such rare
    # prompts can get other ids than CLIP gave them. HTML unescaping happens in `clean` either way.
    _fix_text = _nfc

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77  # CLIP's text transformer has 77 position embeddings
# CLIP keeps 49408 tokens: 256 bytes, the same 256 with </w>, 48894 merges, 2 special tokens. The file
# lists more merges than that (line 0 is a header), so only lines 1..48894 count.
NUM_MERGES = 49152 - 256 - 2
DEFAULT_VOCAB = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
# CLIP's words: the special tokens, English contractions, runs of letters, single digits, and runs of
# anything else that is not a space. Text is lower case by then; CLIP's IGNORECASE still changes one
# character: U+0345 (combining Greek ypogegrammeni, case-folds to a letter) then matches no piece at all.
_WORDS = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


class TokenizerError(ValueError):
    """A vocabulary file that is missing, unreadable or inconsistent; the message names the file."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte value -> its printable stand-in. Printable Latin-1 bytes map to themselves, the rest (controls,
    space, soft hyphen) to chr(256), chr(257), ... in byte order. Dict order is CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    borrowed = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + n) for n, b in enumerate(borrowed)})
    return table


def clean(text: str) -> str:
    """The original CLIP clean-up. transformers 5.x does only NFC + whitespace + lower case, so prompts with
    HTML entities, mojibake, ligatures or control characters get other ids there; we follow CLIP."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


@dataclass
class TokenizerOutput:
    input_ids: torch.Tensor  # (B, context_length) int64: BOS, tokens, EOS, padding
    attention_mask: torch.Tensor  # (B, context_length) int64: 1 up to and including EOS
    num_truncated: list[int]  # prompt tokens dropped per prompt to fit the context
    dropped: list[list[int]]  # the dropped ids themselves, for the warning


class CLIPTokenizer:
    """CLIP's tokenizer from a vocabulary (token -> id) and a ranked merge list.

    pad_token: SD 1.x pads with EOS, SD 2.x (OpenCLIP) with "!" (id 0); `from_folder` reads it from the files.
    source: where the vocabulary came from, named in errors.
    """

    def __init__(
        self,
        encoder: dict[str, int],
        merges: list[tuple[str, str]],
        pad_token: str = EOS,
        context_length: int = CONTEXT_LENGTH,
        source: str = "vocabulary",
    ):
        problem = _vocab_problem(encoder, merges, pad_token)
        if problem:
            raise TokenizerError(f"{source}: {problem}")
        self.encoder = encoder
        self.decoder = {i: token for token, i in encoder.items()}
        self.merges = merges
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.context_length = context_length
        self.bos_token_id, self.eos_token_id = encoder[BOS], encoder[EOS]
        self.pad_token_id = encoder[pad_token]
        # Prompts repeat words ("highly detailed, masterpiece"), so BPE results are worth keeping.
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    @property
    def model_max_length(self) -> int:
        """transformers' name for the context length."""
        return self.context_length

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def default(cls) -> CLIPTokenizer:
        """OpenAI CLIP's vocabulary (SD 1.x's tokenizer), bundled with latentdiff."""
        # A fresh instance each time (callers may change its pad token); the parsed file is shared.
        encoder, merges = _default_parts()
        return cls(encoder, merges, source=str(DEFAULT_VOCAB))

    @classmethod
    def from_bpe_gz(cls, path: str | Path) -> CLIPTokenizer:
        """The original CLIP file: a header line, then merges; the vocabulary is derived from them as CLIP does."""
        path = Path(path)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")[1 : NUM_MERGES + 1]
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path}: cannot read as a gzipped BPE vocabulary ({_reason(e)})") from None
        if len(lines) != NUM_MERGES:
            raise TokenizerError(f"{path}: has {len(lines)} merge lines, CLIP's vocabulary needs {NUM_MERGES}")
        merges = _parse_merges(lines, path, first_line=2)
        symbols = list(bytes_to_unicode().values())
        vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(pair) for pair in merges), BOS, EOS]
        return cls({token: i for i, token in enumerate(vocab)}, merges, source=str(path))

    @classmethod
    def from_files(cls, vocab_json: str | Path, merges_txt: str | Path, pad_token: str = EOS) -> CLIPTokenizer:
        """vocab.json (token -> id) + merges.txt (a `#version` header, then one "a b" pair per line)."""
        vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
        encoder = _read_json(vocab_json)
        lines = _read_text(merges_txt).split("\n")
        first_line = 1
        if lines and lines[0].startswith("#version"):
            lines, first_line = lines[1:], 2
        merges = _parse_merges(lines, merges_txt, first_line)
        return cls(encoder, merges, pad_token, source=f"{vocab_json} with {merges_txt.name}")

    @classmethod
    def from_folder(cls, folder: str | Path) -> CLIPTokenizer:
        """A transformers/diffusers `tokenizer/` folder: vocab.json + merges.txt (as SD ships them) or
        tokenizer.json (all that transformers 5.x saves), with the pad token from the special-tokens files."""
        folder = Path(folder)
        pad = _pad_token(folder)
        if (folder / "vocab.json").exists() or not (folder / "tokenizer.json").exists():
            return cls.from_files(folder / "vocab.json", folder / "merges.txt", pad)
        path = folder / "tokenizer.json"
        model = _read_json(path).get("model")
        if not isinstance(model, dict) or model.get("type", "BPE") != "BPE":
            raise TokenizerError(f"{path}: holds no BPE model")
        merges = [m.split(" ") if isinstance(m, str) else m for m in model.get("merges", [])]
        if any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{path}: a merge is not a pair of symbols")
        return cls(model.get("vocab"), [tuple(m) for m in merges], pad, source=str(path))

    def save(self, folder: str | Path) -> None:
        """Write the transformers layout (vocab.json, merges.txt, special tokens), each file atomically."""
        from .weights.io import atomic_path, write_json  # the project's temp-file-then-os.replace writer

        folder = Path(folder)
        with atomic_path(folder / "vocab.json") as tmp:
            tmp.write_text(json.dumps(self.encoder, ensure_ascii=False), encoding="utf-8")
        with atomic_path(folder / "merges.txt") as tmp:
            tmp.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges), encoding="utf-8")
        # transformers reads the special tokens from these two files (special_tokens_map.json wins).
        specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": self.decoder[self.pad_token_id]}
        write_json(specials, folder / "special_tokens_map.json")
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": self.context_length, "do_lower_case": True}
        write_json({**specials, **config}, folder / "tokenizer_config.json")

    # --- text <-> ids -------------------------------------------------------------------------

    def _bpe_uncached(self, word: str) -> tuple[str, ...]:
        """One word, in stand-in characters -> its tokens."""
        if word in (BOS, EOS):
            return (word,)  # typed by the user; CLIP maps them to the special tokens, not to their bytes
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            best = min(pairwise(symbols), key=lambda pair: self.ranks.get(pair, math.inf))
            if best not in self.ranks:
                break  # no adjacent pair is in the merge list
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def encode(self, text: str) -> list[int]:
        """Token ids of the cleaned text, with no BOS/EOS and no truncation."""
        if not isinstance(text, str):
            raise TypeError(f"a prompt must be a str, not {type(text).__name__}")
        ids = []
        for word in _WORDS.findall(clean(text)):
            # The specials are printable ASCII, so their stand-ins spell them unchanged.
            stand_ins = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self._bpe(stand_ins))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids, one space per word end; bytes that are not valid UTF-8 become "\ufffd"."""
        tokens = []
        for i in ids:
            if int(i) not in self.decoder:
                raise ValueError(f"token id {int(i)} is not in the vocabulary (0..{len(self.decoder) - 1})")
            tokens.append(self.decoder[int(i)])
        text = "".join(tokens).replace("</w>", " ")
        # " " is no byte's stand-in (the space byte's is "Ġ"), so every space here marks a word end.
        raw = bytes(32 if c == " " else self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").strip()

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> TokenizerOutput:
        """BOS + tokens + EOS, truncated so EOS always fits, padded to the context length (default 77)."""
        texts = _prompt_list(texts)
        n = self.context_length if context_length is None else context_length
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"context_length must be an int of at least 2 (BOS and EOS), got {n!r}")
        input_ids = torch.full((len(texts), n), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(texts), n), dtype=torch.long)
        num_truncated, dropped = [], []
        for row, text in enumerate(texts):
            tokens = self.encode(text)
            kept = [self.bos_token_id, *tokens[: n - 2], self.eos_token_id]
            input_ids[row, : len(kept)] = torch.tensor(kept)
            attention_mask[row, : len(kept)] = 1
            num_truncated.append(len(tokens[n - 2 :]))
            dropped.append(tokens[n - 2 :])
        return TokenizerOutput(input_ids, attention_mask, num_truncated, dropped)

    def truncation_warning(self, output: TokenizerOutput, texts: str | list[str]) -> str | None:
        """One line naming each prompt of `texts` that lost tokens in `output`, how many, and the cut words."""
        texts = _prompt_list(texts)
        if len(texts) != len(output.num_truncated):
            raise ValueError(f"{len(texts)} prompts given for a tokenizer output of {len(output.num_truncated)}")
        limit = output.input_ids.shape[1] - 2
        parts = [
            f'prompt {i} is {limit + k} tokens, {k} over the {limit}-token limit; dropped: "{self.decode(cut)}"'
            for i, (k, cut) in enumerate(zip(output.num_truncated, output.dropped, strict=True))
            if k
        ]
        return "; ".join(parts) if parts else None


# --- helpers ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _default_parts() -> tuple[dict[str, int], list[tuple[str, str]]]:
    tokenizer = CLIPTokenizer.from_bpe_gz(DEFAULT_VOCAB)
    return tokenizer.encoder, tokenizer.merges


def _prompt_list(texts: str | list[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"prompts must be a str or a list of str, not {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"prompt {i} is a {type(text).__name__}, not a str")
    return list(texts)


def _vocab_problem(encoder: object, merges: list[tuple[str, str]], pad_token: str) -> str | None:
    """What makes this vocabulary unusable, or None. Checked once so encoding never hits a missing token."""
    if not isinstance(encoder, dict) or not all(isinstance(i, int) for i in encoder.values()):
        return "the vocabulary is not a mapping of tokens to integer ids"
    for name, token in (("BOS", BOS), ("EOS", EOS), ("pad", pad_token)):
        if token not in encoder:
            return f"the vocabulary has no {token!r} token (the {name} token)"
    for symbol in bytes_to_unicode().values():
        if symbol not in encoder or symbol + "</w>" not in encoder:
            return f"the vocabulary lacks the byte symbol {symbol!r} (is this a byte-level BPE vocabulary?)"
    for a, b in merges:
        if a + b not in encoder:
            return f"the merge {a!r} + {b!r} makes {a + b!r}, which is not in the vocabulary"
    return None


def _parse_merges(lines: list[str], path: Path, first_line: int) -> list[tuple[str, str]]:
    """Merge lines ("a b") -> pairs; a blank last line is allowed. first_line: the file line number of lines[0]."""
    if lines and not lines[-1].strip():
        lines = lines[:-1]
    merges = []
    for number, line in enumerate(lines, start=first_line):
        pair = line.split()
        if len(pair) != 2:
            raise TokenizerError(f"{path}: line {number} is not a merge of two symbols: {line[:40]!r}")
        merges.append((pair[0], pair[1]))
    if not merges:
        raise TokenizerError(f"{path}: holds no merges")
    return merges


def _pad_token(folder: Path) -> str:
    """The folder's pad token, as transformers reads it (special_tokens_map.json over tokenizer_config.json)."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).exists():
            pad = _read_json(folder / name).get("pad_token")
            pad = pad.get("content") if isinstance(pad, dict) else pad  # {"content": "!", "lstrip": ...}
            if isinstance(pad, str) and pad:
                return pad
    return EOS


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise TokenizerError(f"{path}: cannot read ({_reason(e)})") from None
    except UnicodeDecodeError:
        raise TokenizerError(f"{path}: is not UTF-8 text") from None


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise TokenizerError(f"{path}: holds a JSON {type(obj).__name__}, not an object")
    return obj


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
