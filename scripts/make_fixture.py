#!/usr/bin/env python3
"""Writes random-weight kiln test models: an HF folder (config.json, safetensors, tokenizer) and
the same weights as GGUF files, laid out as llama.cpp's convert_hf_to_gguf.py would write them.

    make_fixture.py --preset tiny --out DIR [--shards N] [--dtype f32|bf16|f16]
                    [--gguf-type f32,q8_0,...] [--no-gguf] [--no-hf] [--seed S]
    make_fixture.py --config llama3-8b.config.json --out DIR --dtype bf16 --no-gguf
    make_fixture.py --test-fixtures DIR      # everything kiln's tests read (see test_fixtures())

Weights are a deterministic function of (seed, tensor name), generated and written tensor by
tensor (a safetensors file is streamed, so an 8B model never sits in RAM).

GGUF notes (what llama.cpp reads):
  * llama3 rope scaling is stored as the `rope_freqs.weight` tensor ([head_dim/2] f32 per-frequency
    divisors), computed exactly as convert_hf_to_gguf.py does; no `rope.scaling.*` keys are
    written, because llama.cpp applies `rope.scaling.factor` as linear scaling whatever the type.
  * For architecture llama the q/k projection rows are permuted (convert_hf_to_gguf's
    LlamaModel.permute) so that ggml's interleaved-pair RoPE applies; qwen2 is not permuted.
  * 1-D tensors (norms, biases) stay F32 in quantized files, as llama.cpp does.
"""

import argparse
import json
import math
import os
import sys
import zlib

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n'"
    " }}{% endif %}")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
BOS_ID, EOS_ID = 1, 2  # as SmolLM2-Instruct: bos <|im_start|>, eos <|im_end|>
TOKENIZER_VOCAB = 512

# Fixed training text for the fixture tokenizer (English and a little code).
TRAINING_TEXT = """
The quick brown fox jumps over the lazy dog. A compiler lowers a program to a graph, runs
passes that fuse operations into kernels, and writes a plan that a runtime can load and serve.
Attention computes a softmax over query-key products, then sums the values. The key and value
caches hold the past tokens of every sequence, split into pages so that memory is shared.
Hello, world! How are you today? I am fine, thank you. The weather is nice and the sun is out.
Once upon a time there was a little model that wanted to predict the next token of the story.
def forward(self, x):
    h = self.embed(x)
    for layer in self.layers:
        h = h + layer.attention(layer.norm(h))
        h = h + layer.mlp(layer.mlp_norm(h))
    return self.lm_head(self.norm(h))
int main(int argc, char** argv) { std::printf("%d\\n", argc); return 0; }
for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }
The numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and the symbols + - * / = < > ( ) [ ] { } ; : , .
"""

PRESETS = {
    "tiny": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False),
    "tiny-gqa": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64,
        intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True),
    "tiny-qwen2": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=True),
    "tiny-llama3": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=128),
        tie_word_embeddings=False),
    "llama3-8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        bos_token_id=128000, eos_token_id=128001),
}
TINY_PRESETS = ["tiny", "tiny-gqa", "tiny-qwen2", "tiny-llama3"]
SUPPORTED_ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama",
                   "Qwen2ForCausalLM": "qwen2"}


# ----------------------------------------------------------------------------- tokenizer

def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB, min_frequency=1, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    return tok


def tokenizer_tables(tok):
    """(tokens by id, token types, merges as 'a b') from a trained tokenizer."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for added in data["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens), "token ids are not dense"
    types = [3 if t in SPECIAL_TOKENS else 1 for t in tokens]  # 3 = CONTROL, 1 = NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, types, merges


# ----------------------------------------------------------------------------- config / tensors

def normalize_config(cfg, vocab_size):
    cfg = dict(cfg)
    arch = cfg.get("architectures", ["LlamaForCausalLM"])[0]
    if arch not in SUPPORTED_ARCHS:
        sys.exit(f"make_fixture: unsupported architecture {arch}")
    cfg.setdefault("vocab_size", vocab_size)
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    cfg.setdefault("bos_token_id", BOS_ID)
    cfg.setdefault("eos_token_id", EOS_ID)
    cfg.setdefault("tie_word_embeddings", False)
    cfg.setdefault("rms_norm_eps", 1e-5)
    cfg.setdefault("rope_theta", 10000.0)
    cfg.setdefault("max_position_embeddings", 2048)
    return cfg


def hf_tensors(cfg):
    """[(hf name, shape, kind)] in checkpoint order; kind picks the value distribution."""
    h, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    nq, nkv, v = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
    bias = SUPPORTED_ARCHS[cfg["architectures"][0]] == "qwen2"
    out = [("model.embed_tokens.weight", (v, h), "embed")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.append((p + "input_layernorm.weight", (h,), "norm"))
        out.append((p + "self_attn.q_proj.weight", (nq * hd, h), "matrix"))
        out.append((p + "self_attn.k_proj.weight", (nkv * hd, h), "matrix"))
        out.append((p + "self_attn.v_proj.weight", (nkv * hd, h), "matrix"))
        if bias:
            out.append((p + "self_attn.q_proj.bias", (nq * hd,), "bias"))
            out.append((p + "self_attn.k_proj.bias", (nkv * hd,), "bias"))
            out.append((p + "self_attn.v_proj.bias", (nkv * hd,), "bias"))
        out.append((p + "self_attn.o_proj.weight", (h, nq * hd), "matrix"))
        out.append((p + "post_attention_layernorm.weight", (h,), "norm"))
        out.append((p + "mlp.gate_proj.weight", (inter, h), "matrix"))
        out.append((p + "mlp.up_proj.weight", (inter, h), "matrix"))
        out.append((p + "mlp.down_proj.weight", (h, inter), "matrix"))
    out.append(("model.norm.weight", (h,), "norm"))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, h), "matrix"))
    return out


def gguf_name(hf):
    table = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf in table:
        return table[hf]
    layer_map = {
        "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight", "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
        "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight":
        "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight":
        "ffn_down.weight"}
    _, _, i, rest = hf.split(".", 3)
    return f"blk.{i}.{layer_map[rest]}"


CHUNK_ELEMENTS = 1 << 24


def generate(seed, name, shape, kind):
    """Yields the tensor's f32 values in row chunks; the chunking depends on the shape only, so
    every writer sees the same values."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    cols = shape[-1]
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    step = max(1, CHUNK_ELEMENTS // cols)
    scale = {"embed": 1.0, "matrix": 1.0 / math.sqrt(cols), "norm": 0.1, "bias": 0.1}[kind]
    for r in range(0, rows, step):
        n = min(step, rows - r)
        x = rng.standard_normal((n, cols), dtype=np.float32)
        x *= np.float32(scale)
        if kind == "norm":
            x += np.float32(1.0)
        yield x


def f32_to_bf16_bits(x):
    """Round-to-nearest-even by bit arithmetic (no NaNs occur in generated weights)."""
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            ).astype(np.uint16)


def round_to(x, dtype):
    """The chunk's bytes in the safetensors dtype, and the f32 values those bytes hold."""
    if dtype == "f32":
        return x.tobytes(), x
    if dtype == "f16":
        h = x.astype(np.float16)
        return h.tobytes(), h.astype(np.float32)
    b = f32_to_bf16_bits(x)
    return b.tobytes(), (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def full_tensor(seed, name, shape, kind, dtype):
    parts = [round_to(c, dtype)[1] for c in generate(seed, name, shape, kind)]
    return np.concatenate(parts, axis=0).reshape(shape)


# ----------------------------------------------------------------------------- safetensors

ST_DTYPE = {"f32": ("F32", 4), "f16": ("F16", 2), "bf16": ("BF16", 2)}


def write_safetensors(path, entries, seed, dtype):
    """Streams `entries` [(name, shape, kind)] into one safetensors file."""
    st_name, esize = ST_DTYPE[dtype]
    header, offset = {}, 0
    for name, shape, _ in entries:
        n = int(np.prod(shape)) * esize
        header[name] = {"dtype": st_name, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)  # the reference writer pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for name, shape, kind in entries:
            for chunk in generate(seed, name, shape, kind):
                f.write(round_to(chunk, dtype)[0])
    return offset


def write_hf(out, cfg, tok, seed, dtype, shards):
    os.makedirs(out, exist_ok=True)
    entries = hf_tensors(cfg)
    hf_cfg = dict(cfg)
    hf_cfg["torch_dtype"] = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dtype]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIAL_TOKENS[BOS_ID],
                   "eos_token": SPECIAL_TOKENS[EOS_ID], "unk_token": SPECIAL_TOKENS[0],
                   "pad_token": SPECIAL_TOKENS[EOS_ID], "add_bos_token": False,
                   "model_max_length": cfg["max_position_embeddings"],
                   "chat_template": CHATML_TEMPLATE}, f, indent=2)
    written = ["config.json", "tokenizer.json", "tokenizer_config.json"]
    if shards <= 1:
        write_safetensors(os.path.join(out, "model.safetensors"), entries, seed, dtype)
        written.append("model.safetensors")
    else:
        esize = ST_DTYPE[dtype][1]
        total = sum(int(np.prod(s)) * esize for _, s, _ in entries)
        groups, acc = [[] for _ in range(shards)], 0
        for e in entries:  # contiguous groups of roughly equal bytes
            groups[min(shards - 1, acc * shards // max(total, 1))].append(e)
            acc += int(np.prod(e[1])) * esize
        weight_map = {}
        for k, group in enumerate(groups):
            fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(os.path.join(out, fname), group, seed, dtype)
            written.append(fname)
            weight_map.update({name: fname for name, _, _ in group})
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        written.append("model.safetensors.index.json")
    for w in written:
        print(f"wrote {os.path.join(out, w)}")


# ----------------------------------------------------------------------------- GGUF

def llama_permute(w, n_head, n_head_kv):
    """convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(cfg):
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (rope_freqs)."""
    rs = cfg["rope_scaling"]
    base, dim = cfg["rope_theta"], cfg["head_dim"]
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rs.get("factor", 8.0)
    low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old_ctx = rs.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for freq in freqs:
        wl = 2 * math.pi / freq
        if wl < high_wl:
            out.append(1)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old_ctx / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(path, cfg, tok, seed, st_dtype, gguf_type):
    import gguf
    from gguf import GGMLQuantizationType as Q
    arch = SUPPORTED_ARCHS[cfg["architectures"][0]]
    qtype = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0,
             "q4_1": Q.Q4_1}[gguf_type]
    w = gguf.GGUFWriter(path, arch)
    w.add_name("kiln fixture")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    if cfg["head_dim"] != cfg["hidden_size"] // cfg["num_attention_heads"]:
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    w.add_rope_freq_base(float(cfg["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type({Q.F32: 0, Q.F16: 1, Q.BF16: 32, Q.Q8_0: 7, Q.Q4_0: 2, Q.Q4_1: 3}[qtype])
    tokens, types, merges = tokenizer_tables(tok)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)

    if (cfg.get("rope_scaling") or {}).get("rope_type", "").lower() == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(cfg))
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for name, shape, kind in hf_tensors(cfg):
        x = full_tensor(seed, name, shape, kind, st_dtype)
        if arch == "llama" and name.endswith("q_proj.weight"):
            x = llama_permute(x, nq, nq)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            x = llama_permute(x, nq, nkv)
        gname = gguf_name(name)
        t = qtype
        if x.ndim == 1 or (t in (Q.Q8_0, Q.Q4_0, Q.Q4_1) and x.shape[-1] % 32 != 0):
            t = Q.F32  # llama.cpp keeps 1-D tensors (norms, biases) in F32
        if t == Q.F32:
            w.add_tensor(gname, np.ascontiguousarray(x, dtype=np.float32))
        elif t == Q.F16:
            w.add_tensor(gname, x.astype(np.float16))
        else:
            w.add_tensor(gname, gguf.quants.quantize(x, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path}")


def dump_expected(gguf_path, out_path, names=None, max_rows=None):
    """gguf-py's own dequantization of every (or the named) tensor, concatenated as f32 in file
    order: the independent reference the C++ tests compare against."""
    import gguf
    r = gguf.GGUFReader(gguf_path)
    with open(out_path, "wb") as f:
        for t in r.tensors:
            if names is not None and t.name not in names:
                continue
            data = t.data if max_rows is None else t.data[:max_rows]
            f.write(np.ascontiguousarray(gguf.quants.dequantize(data, t.tensor_type),
                                         dtype=np.float32).tobytes())
    print(f"wrote {out_path}")


def write_quant_blocks(out, seed):
    """blocks.gguf: random blocks of every quantized type kiln reads, incl. Q4_K/Q6_K (which
    gguf-py cannot quantize), plus gguf-py's dequantization in blocks.expected.f32."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = os.path.join(out, "blocks.gguf")
    w = gguf.GGUFWriter(path, "llama")
    for qt in (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q6_K):
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qt]
        rows, blocks_per_row = 3, 512 // block_elems
        raw = rng.integers(0, 256, size=(rows, blocks_per_row, block_bytes), dtype=np.uint8)
        # Replace the f16 scale fields with finite values of a sane magnitude.
        scale_pos = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q4_K: [0, 2], Q.Q6_K: [208]}[qt]
        for p in scale_pos:
            s = (rng.standard_normal((rows, blocks_per_row)) * 0.05).astype(np.float16)
            raw[:, :, p:p + 2] = s.view(np.uint8).reshape(rows, blocks_per_row, 2)
        w.add_tensor(f"q.{qt.name.lower()}", raw.reshape(rows, -1), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path}")
    dump_expected(path, os.path.join(out, "blocks.expected.f32"))


def make_model(out, cfg_in, seed, dtype, gguf_types, shards, hf=True, gguf_files=True,
               expected=False):
    tok = train_tokenizer()
    cfg = normalize_config(cfg_in, tok.get_vocab_size())
    if cfg["vocab_size"] != tok.get_vocab_size():
        print(f"note: vocab_size {cfg['vocab_size']} != fixture tokenizer size "
              f"{tok.get_vocab_size()} (shape-only model)")
    os.makedirs(out, exist_ok=True)
    if hf:
        write_hf(out, cfg, tok, seed, dtype, shards)
    if gguf_files:
        n_params = sum(int(np.prod(s)) for _, s, _ in hf_tensors(cfg))
        if n_params > 2_000_000_000:
            sys.exit("make_fixture: GGUF output holds the model in RAM; use --no-gguf for "
                     f"{n_params / 1e9:.1f}B parameters")
        for t in gguf_types:
            path = os.path.join(out, f"model.{t}.gguf")
            write_gguf(path, cfg, tok, seed, dtype, t)
            if expected:
                dump_expected(path, os.path.join(out, f"model.{t}.expected.f32"))


def default_model_path():
    cache = os.environ.get("KILN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kiln"))
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_fixtures(root, seed):
    """Everything the C++ tests read, each part skipped when its stamp file exists:
      <root>/<preset>/           HF f32 single file + model.{f32,q8_0,q4_0,q4_1}.gguf
                                 + model.<type>.expected.f32 (gguf-py dequantization)
      <root>/<preset>/sharded/   the same weights as 3 safetensors shards + index
      <root>/tiny/bf16/, f16/    the same weights stored as bf16 / f16
      <root>/quant/              blocks.gguf + blocks.expected.f32 (all 5 block types)
      <root>/smollm2/            expected f32 of a few tensors of the real SmolLM2 Q4_1 GGUF,
                                 only when that file is in the kiln cache.
      <root>/tokenizers/         SentencePiece-style tokenizer.json files with golden ids from
                                 `tokenizers`, and chat-template renderings by `transformers`
                                 (make_tokenizer_fixtures.py; remade when that script changes)"""
    def stamped(d, fn):
        stamp = os.path.join(d, ".complete")
        if os.path.exists(stamp):
            print(f"{d}: present, skipped")
            return
        fn()
        with open(stamp, "w") as f:
            f.write("ok\n")

    for p in TINY_PRESETS:
        d = os.path.join(root, p)
        stamped(d, lambda: make_model(d, PRESETS[p], seed, "f32", ["f32", "q8_0", "q4_0", "q4_1"],
                                      1, expected=True))
        sd = os.path.join(d, "sharded")
        stamped(sd, lambda: make_model(sd, PRESETS[p], seed, "f32", [], 3, gguf_files=False))
    for dt in ("bf16", "f16"):
        d = os.path.join(root, "tiny", dt)
        stamped(d, lambda: make_model(d, PRESETS["tiny"], seed, dt, [], 1, gguf_files=False))
    qd = os.path.join(root, "quant")
    stamped(qd, lambda: write_quant_blocks(qd, seed))
    import make_tokenizer_fixtures
    make_tokenizer_fixtures.write_all(os.path.join(root, "tokenizers"))
    model = default_model_path()
    if os.path.exists(model):
        md = os.path.join(root, "smollm2")

        def smollm2():
            os.makedirs(md, exist_ok=True)
            dump_expected(model, os.path.join(md, "blk.0.attn_q.weight.f32"),
                          names={"blk.0.attn_q.weight"})
            dump_expected(model, os.path.join(md, "blk.29.ffn_down.weight.f32"),
                          names={"blk.29.ffn_down.weight"})
            dump_expected(model, os.path.join(md, "token_embd.weight.rows8.f32"),
                          names={"token_embd.weight"}, max_rows=8)
        stamped(md, smollm2)
    else:
        print(f"{model} not present: SmolLM2 expectations skipped")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--config", help="HF config.json to take the shape from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32",
                    help="safetensors dtype (the GGUF holds the same rounded values)")
    ap.add_argument("--gguf-type", default="f32",
                    help="comma list of f32,f16,bf16,q8_0,q4_0,q4_1; writes model.<type>.gguf")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--no-gguf", action="store_true")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--dump-expected", action="store_true",
                    help="also write model.<type>.expected.f32 (gguf-py dequantization)")
    ap.add_argument("--test-fixtures", metavar="DIR", help="write every fixture kiln's tests use")
    a = ap.parse_args()
    if a.test_fixtures:
        test_fixtures(a.test_fixtures, a.seed)
        return
    if not a.out or bool(a.preset) == bool(a.config):
        ap.error("need --out and exactly one of --preset / --config")
    if a.config:
        with open(a.config) as f:
            cfg = json.load(f)
    else:
        cfg = PRESETS[a.preset]
    types = [t for t in a.gguf_type.split(",") if t]
    bad = [t for t in types if t not in ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1")]
    if bad:
        ap.error(f"unsupported --gguf-type {bad}")
    make_model(a.out, cfg, a.seed, a.dtype, types, a.shards, hf=not a.no_hf,
               gguf_files=not a.no_gguf, expected=a.dump_expected)


if __name__ == "__main__":
    main()
