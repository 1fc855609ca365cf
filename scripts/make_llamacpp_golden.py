#!/usr/bin/env python3
"""Golden tokens and logits from llama.cpp (PyPI llama-cpp-python) for kiln's reference backend.

llama.cpp quantizes activations when it multiplies by quantized weights and keeps its KV cache in
f16 by default; to compare on the same arithmetic this script
  1. dequantizes SmolLM2-135M-Instruct's Q4_1 GGUF into an F32 GGUF (same metadata, same tensor
     names; written to ${KILN_CACHE:-~/.cache/kiln}/models/SmolLM2-135M-Instruct.F32.gguf),
  2. runs llama.cpp on it with an f32 KV cache: greedy 32-token continuations of 3 fixed prompts,
     and the full logits of the first positions of each prompt,
  3. runs llama.cpp on the Q4_1 file itself under teacher forcing (its greedy pick at every
     position of a fixed text), so kiln can report how often it picks the same next token.
Writes tests/runtime/testdata/smollm2_llamacpp_golden.json (ids) and, in the cache,
smollm2_llamacpp_logits.f32 (full logit rows, too large for git; the JSON keeps each early
position's 256 largest logits) with the offsets recorded in the JSON.

Usage: python3 scripts/make_llamacpp_golden.py [--f32-only]
"""
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KILN_CACHE", Path.home() / ".cache" / "kiln"))
Q41 = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
F32 = CACHE / "models" / "SmolLM2-135M-Instruct.F32.gguf"
GOLDEN = REPO / "tests" / "runtime" / "testdata" / "smollm2_llamacpp_golden.json"
LOGITS = CACHE / "golden" / "smollm2_llamacpp_logits.f32"

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat is the boiling point of water at sea level?<|im_end|>\n<|im_start|>assistant\n",
]
NEW_TOKENS = 32
LOGIT_POSITIONS = 4  # full logits of the first positions of each prompt
TOP_LOGITS = 256
TEACHER_TEXT = (
    "Photosynthesis is the process by which green plants and some other organisms use sunlight to "
    "synthesize foods from carbon dioxide and water. It generally involves the green pigment "
    "chlorophyll and generates oxygen as a byproduct. The process takes place mainly in the leaves."
)


def dequantize_to_f32(src: Path, dst: Path):
    import gguf
    if dst.exists():
        return
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst) + ".tmp", arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_uint32(name, 0)  # ALL_F32
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, field.contents())
        else:
            writer.add_key_value(name, field.contents(), vtype)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape.tolist())]  # ggml ne[] -> numpy order
        writer.add_tensor(t.name, data.reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(str(dst) + ".tmp", dst)
    print(f"wrote {dst}")


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--f32-only", action="store_true",
                    help="only write the dequantized F32 GGUF into the cache (needs gguf + numpy, "
                         "not llama-cpp-python); the committed goldens are left alone")
    args = ap.parse_args()
    if not Q41.exists():
        sys.exit(f"{Q41} missing: run scripts/fetch-model.sh")
    F32.parent.mkdir(parents=True, exist_ok=True)
    dequantize_to_f32(Q41, F32)
    if args.f32_only:
        print(F32)
        return
    from llama_cpp import Llama

    # type_k/type_v 0 = GGML_TYPE_F32: no f16 rounding of the KV cache.
    llm = Llama(model_path=str(F32), n_ctx=512, logits_all=True, type_k=0, type_v=0, n_threads=2,
                verbose=False, seed=0)
    cases = []
    logits_out = []
    offset = 0
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        first = np.array(llm.scores[: min(LOGIT_POSITIONS, len(ids))], dtype=np.float32)
        logits_out.append(first)
        generated = []
        for tok in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            generated.append(int(tok))
            if len(generated) == NEW_TOKENS:
                break
        # The 256 largest logits of each early position go into git (the full rows stay in the
        # cache): enough to check values to 1e-3 and the ranking that greedy decoding depends on.
        top = []
        for row in first:
            order = np.argsort(-row, kind="stable")[:TOP_LOGITS]
            top.append({"ids": [int(i) for i in order], "logits": [float(row[i]) for i in order]})
        cases.append({"prompt": prompt, "prompt_ids": ids, "greedy_ids": generated,
                      "logits_positions": int(first.shape[0]), "logits_offset_floats": offset,
                      "top_logits": top})
        offset += first.size
    vocab = llm.n_vocab()

    q = Llama(model_path=str(Q41), n_ctx=512, logits_all=True, n_threads=2, verbose=False, seed=0)
    teacher_ids = q.tokenize(TEACHER_TEXT.encode("utf-8"), add_bos=False, special=True)
    q.reset()
    q.eval(teacher_ids)
    picks = [int(np.argmax(q.scores[i])) for i in range(len(teacher_ids))]

    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps({
        "generator": "scripts/make_llamacpp_golden.py (llama-cpp-python %s)" % __import__("llama_cpp").__version__,
        "f32_model": "SmolLM2-135M-Instruct Q4_1 dequantized to F32, f32 KV cache",
        "vocab_size": vocab,
        "logits_file": "${KILN_CACHE}/golden/smollm2_llamacpp_logits.f32",
        "cases": cases,
        "teacher_forcing_q4_1": {"text": TEACHER_TEXT, "ids": teacher_ids, "llamacpp_argmax": picks},
    }, ensure_ascii=False, indent=1) + "\n")
    LOGITS.parent.mkdir(parents=True, exist_ok=True)
    np.concatenate([x.reshape(-1) for x in logits_out]).astype("<f4").tofile(LOGITS)
    print(f"wrote {GOLDEN} and {LOGITS}")


if __name__ == "__main__":
    main()
