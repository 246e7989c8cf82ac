"""CLIP's byte-level BPE tokenizer: text -> token ids, as SD's text encoder was trained to read them.

Byte-level BPE works on the UTF-8 bytes of the text, so any string can be encoded with no
"unknown" token. Each of the 256 bytes is first mapped to a printable unicode character (the
byte-to-unicode table) because the vocabulary and merge files are text and must not contain
spaces or control characters. BPE then repeatedly merges the adjacent pair of symbols with the
lowest rank in the merge list. CLIP marks the last symbol of every word with `</w>`, so "cat" at
the end of a word and "cat" inside "category" are different tokens.

Cleaning follows the original CLIP code: ftfy's mojibake fixes, HTML unescaping (twice), runs of
whitespace collapsed to one space, lower case. Prompts become BOS + tokens + EOS, truncated to
the context length (77) and padded.
"""

from __future__ import annotations

import gzip
import html
import json
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import ftfy
import regex
import torch

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
DEFAULT_VOCAB = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
# CLIP's words: the special tokens, English contractions, runs of letters, single digits, and runs
# of anything else that is not a space.
_PIECES = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


class TokenizerError(ValueError):
    """A vocabulary that cannot be read, or input that is not text."""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte value -> a printable character. Printable Latin-1 bytes map to themselves; the
    rest (controls, space, ...) to characters from 256 upward, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def clean(text: str) -> str:
    """The original CLIP clean-up (transformers 5.x skips ftfy and HTML unescaping)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


@dataclass
class TokenizerOutput:
    input_ids: torch.Tensor  # (B, context_length) int64
    attention_mask: torch.Tensor  # (B, context_length), 1 up to and including EOS
    num_truncated: list[int]  # prompt tokens dropped per prompt to fit the context
    dropped: list[list[int]]  # the dropped ids themselves


class CLIPTokenizer:
    def __init__(
        self,
        encoder: dict[str, int],
        merges: list[tuple[str, str]],
        pad_token: str = EOS,
        context_length: int = CONTEXT_LENGTH,
    ):
        self.encoder = encoder
        self.decoder = {i: t for t, i in encoder.items()}
        self.merges = merges
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.context_length = context_length
        for special in (BOS, EOS, pad_token):
            if special not in encoder:
                raise TokenizerError(f"vocabulary has no {special!r} token")
        self.bos_token_id, self.eos_token_id = encoder[BOS], encoder[EOS]
        self.pad_token_id = encoder[pad_token]
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def default(cls) -> CLIPTokenizer:
        """OpenAI CLIP's vocabulary (SD 1.x's tokenizer), bundled with latentdiff."""
        return _default()

    @classmethod
    def from_bpe_gz(cls, path: str | Path) -> CLIPTokenizer:
        """The original CLIP file: a header line, then merges; the vocabulary is derived from them."""
        path = Path(path)
        try:
            lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path}: cannot read the BPE vocabulary ({e})") from None
        # 49152 tokens = 256 bytes x 2 (with and without </w>) + 48894 merges + 2 specials.
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        if len(merges) != 48894 or any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{path}: expected 48894 merge lines of two symbols each")
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
        return cls({token: i for i, token in enumerate(vocab)}, merges)

    @classmethod
    def from_folder(cls, folder: str | Path) -> CLIPTokenizer:
        """A transformers/diffusers `tokenizer/` folder: vocab.json + merges.txt (as SD ships them)
        or tokenizer.json (what transformers 5.x saves), plus the special-tokens files."""
        folder = Path(folder)
        if not (folder / "vocab.json").exists() and (folder / "tokenizer.json").exists():
            model = _read_json(folder / "tokenizer.json").get("model", {})
            encoder = model.get("vocab")
            merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
            source = folder / "tokenizer.json"
        else:
            encoder, source = _read_json(folder / "vocab.json"), folder / "merges.txt"
            try:
                lines = source.read_text(encoding="utf-8").split("\n")
            except OSError as e:
                raise TokenizerError(f"{source}: cannot read ({e.strerror})") from None
            merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        if not isinstance(encoder, dict) or not merges or any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{source}: not a BPE vocabulary (needs a vocab and merges of two symbols each)")
        pad = EOS
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (folder / name).exists():
                value = _read_json(folder / name).get("pad_token")
                if value:
                    pad = value["content"] if isinstance(value, dict) else value
                    break
        return cls(encoder, merges, pad_token=pad)

    def save(self, folder: str | Path) -> None:
        """Write the transformers layout (readable by transformers' CLIPTokenizer), atomically per file."""
        from .weights.io import atomic_path, write_json

        folder = Path(folder)
        write_json(self.encoder, folder / "vocab.json")
        with atomic_path(folder / "merges.txt") as tmp:
            tmp.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges), encoding="utf-8")
        pad = self.decoder[self.pad_token_id]
        specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad}
        write_json(specials, folder / "special_tokens_map.json")
        write_json(
            {
                **specials,
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": self.context_length,
                "do_lower_case": True,
                "errors": "replace",
            },
            folder / "tokenizer_config.json",
        )

    # --- encoding -----------------------------------------------------------------------------

    def _bpe_uncached(self, piece: str) -> tuple[str, ...]:
        if piece in (BOS, EOS):
            return (piece,)
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(self.ranks.get(pair, len(self.ranks)), i) for i, pair in enumerate(pairwise(word))]
            rank, _ = min(pairs)
            if rank == len(self.ranks):
                break  # no pair left that the merge list knows
            first, second = self.merges[rank]
            merged, i = [], 0
            while i < len(word):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(word)

    def encode(self, text: str) -> list[int]:
        """Token ids of the cleaned text, with no BOS/EOS and no truncation."""
        if not isinstance(text, str):
            raise TokenizerError(f"a prompt must be a str, got {type(text).__name__}")
        ids = []
        for piece in _PIECES.findall(clean(text)):
            if piece not in (BOS, EOS):
                piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self._bpe(piece))
        return ids

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids).replace("</w>", " ")
        # Every character is a byte's stand-in, except the spaces that end-of-word marks became.
        raw = bytes(self.byte_decoder[c] if c != " " else 32 for c in text)
        return raw.decode("utf-8", errors="replace").strip()

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> TokenizerOutput:
        """BOS + tokens + EOS, truncated so EOS always fits, padded to the context length."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TokenizerError("prompts must be a str or a list of str")
        n = context_length or self.context_length
        ids = torch.full((len(texts), n), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), n), dtype=torch.long)
        truncated, dropped = [], []
        for row, text in enumerate(texts):
            tokens = self.encode(text)
            kept = [self.bos_token_id, *tokens[: n - 2], self.eos_token_id]
            ids[row, : len(kept)] = torch.tensor(kept)
            mask[row, : len(kept)] = 1
            truncated.append(max(0, len(tokens) - (n - 2)))
            dropped.append(tokens[n - 2 :])
        return TokenizerOutput(ids, mask, truncated, dropped)

    def truncation_warning(self, output: TokenizerOutput, texts: str | list[str]) -> str | None:
        """One line naming each prompt that lost tokens, how many, and the words that were cut."""
        texts = [texts] if isinstance(texts, str) else texts
        limit = output.input_ids.shape[1] - 2
        parts = [
            f'prompt {i} is {limit + k} tokens, {k} over the {limit}-token limit; dropped: "{self.decode(d)}"'
            for i, (k, d) in enumerate(zip(output.num_truncated, output.dropped, strict=True))
            if k
        ]
        return "; ".join(parts) if parts else None


@lru_cache(maxsize=1)
def _default_parts() -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = CLIPTokenizer.from_bpe_gz(DEFAULT_VOCAB)
    return tok.encoder, tok.merges


def _default() -> CLIPTokenizer:
    # A fresh instance each time (its pad token may be changed); the parsed file is shared.
    encoder, merges = _default_parts()
    return CLIPTokenizer(encoder, merges)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TokenizerError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None
