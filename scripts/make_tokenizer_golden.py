#!/usr/bin/env python3
"""Golden token ids for kiln's tokenizer tests, made by independent implementations.

Reads the SmolLM2 GGUF and
  1. tokenizes a fixed list of texts with llama.cpp (PyPI llama-cpp-python, vocab only) -> the
     golden ids, written to tests/models/testdata/smollm2_golden.json (small; committed);
  2. builds a HF tokenizer.json from the GGUF's vocab + merges with SmolLM2's HF pre-tokenizer
     (Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]) and cross-checks the
     ids with the `tokenizers` package; disagreements are reported (llama.cpp's ids stay golden);
  3. writes that tokenizer.json (+ a tokenizer_config.json with bos/eos/chat template) to
     ${KILN_CACHE:-~/.cache/kiln}/fixtures/smollm2-tokenizer/ (never into git), and links the GGUF
     to ${KILN_CACHE}/models/SmolLM2-135M-Instruct.Q4_1.gguf when that file is missing.

Usage: python3 scripts/make_tokenizer_golden.py [--gguf PATH]
"""
import argparse
import json
import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln"))
MODEL_PATH = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
FIXTURE_DIR = CACHE / "fixtures" / "smollm2-tokenizer"
GOLDEN = REPO / "tests" / "models" / "testdata" / "smollm2_golden.json"

TEXTS = [
    # English prose and contractions
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "I'm sure they'll say we'd've done it; you're right, it's what he's done. DON'T SHOUT'S",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE",
    # other scripts
    "你好，世界！今天天气很好。",
    "مرحبا بالعالم، كيف حالك؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Привет, мир! Как дела?",
    "こんにちは世界。カタカナとひらがな、漢字。",
    "Ελληνικά και 한국어 텍스트",
    # emoji, ZWJ sequences, flags, combining marks
    "I ❤️ emoji 😀😃😄",
    "Family: 👨‍👩‍👧‍👦 and 🧑🏽‍💻 at work",
    "Flags: 🇫🇷🇩🇪🇯🇵 🏳️‍🌈",
    "e\u0301 n\u0303 a\u0308 combining",
    # code
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <vector>\n\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) {\n"
    "\t\tx *= 2;\n\t}\n\treturn 0;\n}\n",
    "x=a[i]+b[j]*c->d; // comment\n/* block */",
    # whitespace runs
    "a  b   c    d",
    "   leading spaces",
    "trailing spaces   ",
    "tabs\tand\t\ttabs",
    "line1\nline2\n\nline4\n\n\n",
    "mixed \t \n \r\n  whitespace\t\n",
    " ",
    "\n",
    "    ",
    "\t\t\n\n  ",
    # digits
    "1234567890",
    "Pi is 3.14159265358979 and e is 2.718",
    "Year 2024, 1,000,000 items, 42nd place",
    "٣٤٥ ①②③ Ⅻ",
    # special tokens in text
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>after end",
    "text<|im_end|>",
    "<|im_start|><|im_end|>",
    "not special: <|im_start |> <im_start>",
    # odds and ends
    "",
    "!!!???...,,,",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2",
    "email@example.com",
    "CamelCaseIdentifier snake_case_identifier",
    "ÀÉÎÕÜ àéîõü ßæøå",
    # bytes SmolLM2's vocabulary lacks (0x04, 0x13, lead byte 0xF2): dropped by both references
    "a\U000a0000b ctrl\x04\x13chars",
]


def random_texts(count, seed=1234):
    """Deterministic random mixes of the character classes the pre-tokenizers treat differently."""
    pools = [
        "abcxyzABCXYZ", "0123456789", " ", "  ", "\t", "\n", "\r\n", ".,;:!?'\"-_()[]{}<>/\\@#$%^&*",
        "'s", "'ll", "éßøñ", "你好世界", "мир", "مرحبا", "😀🎉", "\u0301", "٣④", "\u00a0", "\u3000",
    ]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = [rng.choice(rng.choice(pools)) if rng.random() < 0.5 else rng.choice(pools)
                 for _ in range(rng.randint(1, 30))]
        out.append("".join(parts))
    return out


def read_gguf_vocab(path):
    from gguf import GGUFReader

    r = GGUFReader(str(path))

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = r.fields[key]
        return f.parts[f.data[0]].tolist()[0]

    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    ct = r.fields["tokenizer.chat_template"]
    return {
        "tokens": strings("tokenizer.ggml.tokens"),
        "merges": strings("tokenizer.ggml.merges"),
        "types": types,
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
        "chat_template": bytes(ct.parts[ct.data[0]]).decode("utf-8"),
    }


def build_hf_tokenizer(v):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(v["tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in v["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # SmolLM2's own tokenizer.json on the HF hub uses exactly this pre-tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(v["tokens"], v["types"]) if ty == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = MODEL_PATH if MODEL_PATH.exists() else CACHE / "dl" / "smollm2.gguf"
    ap.add_argument("--gguf", type=Path, default=default)
    ap.add_argument("--tokenizer-json-only", action="store_true",
                    help="only (re)write the cached tokenizer.json (no llama-cpp-python needed; the "
                         "committed golden ids are left alone)")
    args = ap.parse_args()
    if not args.gguf.exists():
        sys.exit(f"make_tokenizer_golden: {args.gguf} not found (pass --gguf PATH)")
    if args.tokenizer_json_only:
        write_tokenizer_fixture(build_hf_tokenizer(read_gguf_vocab(args.gguf)), read_gguf_vocab(args.gguf))
        return

    from llama_cpp import Llama

    llm = Llama(model_path=str(args.gguf), vocab_only=True, verbose=False)
    v = read_gguf_vocab(args.gguf)
    hf = build_hf_tokenizer(v)

    texts = TEXTS + random_texts(40)
    cases = []
    disagreements = 0
    for text in texts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []
        ref = hf.encode(text, add_special_tokens=False).ids
        if ids != ref:
            disagreements += 1
            print(f"DISAGREE {text!r}\n  llama.cpp: {ids}\n  tokenizers: {ref}", file=sys.stderr)
        cases.append({"text": text, "ids": ids})

    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    golden = {
        "generator": "scripts/make_tokenizer_golden.py (llama.cpp via llama-cpp-python, vocab only)",
        "model": "SmolLM2-135M-Instruct (tokenizer.ggml.pre = smollm)",
        "vocab_size": len(v["tokens"]),
        "cases": cases,
    }
    GOLDEN.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    write_tokenizer_fixture(hf, v)
    if not MODEL_PATH.exists():
        MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
        MODEL_PATH.symlink_to(args.gguf.resolve())
        print(f"linked {MODEL_PATH} -> {args.gguf.resolve()}")
    print(f"wrote {GOLDEN} ({len(cases)} texts, {disagreements} llama.cpp/tokenizers disagreements)")


def write_tokenizer_fixture(hf, v):
    """The HF tokenizer.json + tokenizer_config.json built from the GGUF, into the cache."""
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    hf.save(str(FIXTURE_DIR / "tokenizer.json"))
    config = {
        "bos_token": v["tokens"][v["bos"]],
        "eos_token": v["tokens"][v["eos"]],
        "add_bos_token": False,
        "chat_template": v["chat_template"],
    }
    (FIXTURE_DIR / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1))
    print(f"wrote {FIXTURE_DIR}/tokenizer.json and tokenizer_config.json")


if __name__ == "__main__":
    main()
