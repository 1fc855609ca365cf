#!/usr/bin/env python3
"""SentencePiece-style tokenizer.json fixtures and chat-template goldens, made by the reference
libraries themselves (never committed; regenerated whenever this script changes).

    make_tokenizer_fixtures.py DIR

writes
  DIR/llama2-spm/    tokenizer.json in the Llama-2 layout (BPE with byte_fallback, normalizer
                     Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer), trained by the
                     `tokenizers` library, + tokenizer_config.json + golden.json
  DIR/mistral-spm/   the same vocabulary in the Mistral layout (no normalizer, Metaspace
                     pre-tokenizer with prepend_scheme "first", split false)
  DIR/metaspace-split/ Metaspace with prepend_scheme "always" and split true
  DIR/metaspace-legacy/ Metaspace as older files spell it (add_prefix_space, no prepend_scheme)
  DIR/chat_templates.json  templates, conversations and what `transformers`'
                     apply_chat_template renders for them (or, without transformers, what jinja2
                     renders with transformers' environment and globals; the file says which)

golden.json holds, per text, the ids `tokenizers` gives (add_special_tokens=False). Texts with
invalid UTF-8 (which `tokenizers` cannot take) are derived from it: every invalid byte is replaced
by a private-use character missing from the vocabulary, which `tokenizers` byte-falls back to
its three <0xNN> tokens; those three are then replaced by the invalid byte's own <0xNN> token.
Both tokenizers carry added tokens with every lstrip / rstrip / single_word / normalized choice.
Called by make_fixture.py --test-fixtures (the ctest `make_fixtures`).
"""
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tokenizer_golden import TEXTS, random_texts  # noqa: E402

SPACE = "\u2581"
TRAINING = [
    "The quick brown fox jumps over the lazy dog. Hello, world! How are you today?",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune.",
    "I'm sure they'll say we'd've done it; you're right, it's what he's done.",
    "def forward(self, x):\n    h = self.embed(x)\n    for layer in self.layers:\n        h = h + 1\n",
    "int main(int argc, char** argv) { return 0; }  for (int i = 0; i < n; ++i) sum += a[i];",
    "Bonjour le monde, ça va ? Très bien, merci. Ελληνικά και 한국어 텍스트",
    "你好，世界！今天天气很好。こんにちは世界。Привет, мир! Как дела? مرحبا بالعالم",
    "The numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and symbols + - * / = < > ( ) [ ] { } ; : , .",
    "    indented  with   runs    of     spaces\t\ttabs\n\nand newlines\n",
]
SPECIALS = ["<unk>", "<s>", "</s>"]
# (content, options) for the added tokens; ids follow the vocabulary.
ADDED = [
    ("[INST]", dict(special=True)),
    ("[/INST]", dict(special=True)),
    ("<lstrip>", dict(special=True, lstrip=True)),
    ("<rstrip>", dict(special=True, rstrip=True)),
    ("<both>", dict(special=False, lstrip=True, rstrip=True, normalized=False)),
    ("word", dict(special=False, single_word=True, normalized=False)),
    ("<norm>", dict(special=False, normalized=True)),
    ("hello friend", dict(special=False, normalized=True)),
    ("<raw>", dict(special=False, normalized=False)),
]
ADDED_TEXTS = [
    "[INST] Hi there [/INST] Hello!</s>",
    "<s>[INST]What?[/INST]",
    "a   <lstrip>   b", "<lstrip>x", "x<lstrip>", "a \t\n<lstrip>",
    "a   <rstrip>   b", "<rstrip>", "x <rstrip>\n\ny",
    "a  <both>  b", "  <both>  ", "<both><both> <both>",
    "word", "a word here", "awordb", "word_x", "x_word", "words", "(word)", "word,word", " word ",
    "<norm>", "x <norm> y", "x<norm>y",
    "hello friend", "say hello friend now", "hello  friend", "hellofriend",
    "<raw>", "a <raw> b", "<raw><raw>",
    "text</s> more <s>", "<unk>", " <s> ", "<s>  leading after special",
]
INVALID_UTF8 = [
    b"\xff", b"abc\xffdef", b"\xc3", b"caf\xc3 \xe9t\xe9", b"\xe2\x82 x", b"\xf0\x9f\x98",
    b"\x80\x80 two continuations", b"ok \xed\xa0\x80 surrogate", b"\xc0\xaf overlong",
    b"mixed \xe4\xbd\xa0\xff\xfe end",
]


def train_vocab():
    """A SentencePiece-shaped vocabulary: <unk> <s> </s>, the 256 byte tokens, then pieces."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE),
                                           normalizers.Replace(" ", SPACE)])
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(TRAINING * 3 + TEXTS, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return vocab, merges


def build(vocab, merges, layout):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    if layout == "llama2":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE),
                                               normalizers.Replace(" ", SPACE)])
        tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    elif layout == "mistral":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first",
                                                     split=False)
        tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="first", split=False)
    else:  # metaspace-split
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always",
                                                     split=True)
        tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    for content, opts in ADDED:
        o = dict(opts)
        special = o.pop("special")
        o.setdefault("normalized", not special)
        t = AddedToken(content, special=special, **o)
        (tok.add_special_tokens if special else tok.add_tokens)([t])
    return tok


def legacy_metaspace(tok):
    """The Metaspace spelling of files written before prepend_scheme existed (tokenizers < 0.14):
    add_prefix_space (+ str_rep), no split field; `tokenizers` still reads it."""
    from tokenizers import Tokenizer

    j = json.loads(tok.to_str())
    for key in ("pre_tokenizer", "decoder"):
        j[key] = {"type": "Metaspace", "replacement": SPACE, "str_rep": SPACE,
                  "add_prefix_space": True}
    text = json.dumps(j, ensure_ascii=False)
    return Tokenizer.from_str(text), text


def invalid_utf8_ids(tok, raw):
    """Golden ids of a byte string with invalid UTF-8, derived from `tokenizers` (module doc)."""
    pieces, placeholders = [], []
    i = 0
    while i < len(raw):
        for n in (4, 3, 2, 1):
            try:
                pieces.append(raw[i:i + n].decode("utf-8"))
                i += n
                break
            except UnicodeDecodeError:
                continue
        else:
            cp = 0xE000 + len(placeholders)
            placeholders.append(raw[i])
            pieces.append(chr(cp))
            i += 1
    ids = tok.encode("".join(pieces), add_special_tokens=False).ids
    vocab = tok.get_vocab()
    out, k = [], 0
    for p, b in enumerate(placeholders):
        triple = [vocab[f"<0x{x:02X}>"] for x in chr(0xE000 + p).encode("utf-8")]
        while ids[k:k + 3] != triple:
            out.append(ids[k])
            k += 1
        out.append(vocab[f"<0x{b:02X}>"])
        k += 3
    return out + ids[k:]


def write_tokenizer(root, name, tok, text=None):
    """`text`: the tokenizer.json to write as it is (tok.save would rewrite it in today's form)."""
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    if text is None:
        tok.save(str(d / "tokenizer.json"))
    else:
        (d / "tokenizer.json").write_text(text, encoding="utf-8")
    config = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True}
    (d / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    cases = []
    for text in TEXTS + random_texts(60, seed=77) + ADDED_TEXTS:
        enc = tok.encode(text, add_special_tokens=False)
        cases.append({"hex": text.encode("utf-8").hex(), "ids": enc.ids,
                      "decoded": tok.decode(enc.ids, skip_special_tokens=False)})
    for raw in INVALID_UTF8:
        cases.append({"hex": raw.hex(), "ids": invalid_utf8_ids(tok, raw)})
    import tokenizers
    golden = {"generator": f"scripts/make_tokenizer_fixtures.py, tokenizers {tokenizers.__version__}",
              "cases": cases}
    (d / "golden.json").write_text(json.dumps(golden, ensure_ascii=False, indent=0))
    print(f"wrote {d} ({len(cases)} golden texts)")


# ----------------------------------------------------------------------------- chat templates

TEMPLATES = {
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "smollm2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}"),
    # Meta-Llama-3-8B-Instruct's tokenizer_config.json.
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
        "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
        "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
        "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    # Llama-2-7b-chat-hf's: a system message is folded into the first user turn.
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = "
        "messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception("
        "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
        "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
        "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
        "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"),
    # Mistral-7B-Instruct-v0.1's.
    "mistral": (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
        "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' "
        "%}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and "
        "assistant roles are supported!') }}{% endif %}{% endfor %}"),
    # Mistral-7B-Instruct-v0.3's (without its tool-calling branches): the system message goes
    # into the last user turn.
    "mistral-v0.3": (
        "{%- if messages[0][\"role\"] == \"system\" %}\n"
        "    {%- set system_message = messages[0][\"content\"] %}\n"
        "    {%- set loop_messages = messages[1:] %}\n"
        "{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n"
        "{{- bos_token }}\n"
        "{%- for message in loop_messages %}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
        "        {{- raise_exception('After the optional system message, conversation roles must "
        "alternate user/assistant/user/assistant/...') }}\n"
        "    {%- endif %}\n"
        "    {%- if message['role'] == 'user' %}\n"
        "        {%- if loop.last and system_message is defined %}\n"
        "            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}\n"
        "        {%- else %}\n"
        "            {{- '[INST] ' + message['content'] + '[/INST]' }}\n"
        "        {%- endif %}\n"
        "    {%- elif message['role'] == 'assistant' %}\n"
        "        {{- ' ' + message['content'] + eos_token}}\n"
        "    {%- else %}\n"
        "        {{- raise_exception('Only user and assistant roles are supported, with the "
        "exception of an initial optional system message!') }}\n"
        "    {%- endif %}\n"
        "{%- endfor %}\n"),
    # Qwen2-7B-Instruct's: a default system message when the conversation has none.
    "qwen2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    # Gemma's: no system role (raise), 'assistant' renamed 'model', multi-line with block tags
    # (trim_blocks / lstrip_blocks matter).
    "gemma": (
        "{{ bos_token }}\n{% if messages[0]['role'] == 'system' %}\n"
        "    {{ raise_exception('System role not supported') }}\n{% endif %}\n"
        "{% for message in messages %}\n"
        "    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
        "        {{ raise_exception('Conversation roles must alternate user/assistant/user/"
        "assistant/...') }}\n    {% endif %}\n"
        "    {% if (message['role'] == 'assistant') %}\n        {% set role = 'model' %}\n"
        "    {% else %}\n        {% set role = message['role'] %}\n    {% endif %}\n"
        "    {{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}\n"
        "{% endfor %}\n{% if add_generation_prompt %}\n    {{'<start_of_turn>model\n'}}\n"
        "{% endif %}\n"),
    # A system-message special case with a namespace, filters and whitespace control.
    "system-special": (
        "{%- set ns = namespace(sys='') -%}\n"
        "{%- for m in messages if m.role == 'system' -%}{%- set ns.sys = ns.sys + m.content -%}"
        "{%- endfor -%}\n"
        "{%- if ns.sys | length > 0 %}<<{{ ns.sys | upper }}>>\n{% endif -%}\n"
        "{%- for m in messages -%}\n"
        "  {%- if m.role == 'user' %}U({{ loop.index }}/{{ messages | length }}): "
        "{{ m.content | trim }}\n"
        "  {%- elif m.role == 'assistant' %}A: {{ m['content'].strip() ~ eos_token }}\n"
        "  {%- endif -%}\n{%- endfor -%}\n"
        "{%- if add_generation_prompt %}A:{% endif -%}"),
}
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": " What is 2+2? "}],
    [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": " Hi! How can I help? "},
     {"role": "user", "content": "Tell me a joke.\nA short one."}],
    [{"role": "system", "content": "You are kiln."}, {"role": "user", "content": "Ça va ? 😀"},
     {"role": "assistant", "content": "Oui."}, {"role": "user", "content": "{{ not jinja }}"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],  # not alternating
]


def render_chat_goldens(path):
    try:
        import transformers  # noqa: F401
        from transformers.utils.chat_template_utils import render_jinja_template  # noqa: F401
        renderer = f"transformers {transformers.__version__}"
    except ImportError:
        renderer = None
        try:
            import jinja2  # noqa: F401
        except ImportError:
            sys.exit("make_tokenizer_fixtures: chat-template goldens need transformers or jinja2 "
                     "(pip install transformers, or apt-get install python3-jinja2)")
    cases = []
    for name, template in TEMPLATES.items():
        for ci, conv in enumerate(CONVERSATIONS):
            for agp in (False, True):
                out, err = render_one(template, conv, agp, renderer is not None)
                cases.append({"template": name, "conversation": ci, "add_generation_prompt": agp,
                              "output": out, "error": err})
    if renderer is None:
        import jinja2
        renderer = f"jinja2 {jinja2.__version__} with transformers' environment (no transformers)"
    golden = {"generator": "scripts/make_tokenizer_fixtures.py", "renderer": renderer,
              "bos_token": "<s>", "eos_token": "</s>", "templates": TEMPLATES,
              "conversations": CONVERSATIONS, "cases": cases}
    Path(path).write_text(json.dumps(golden, ensure_ascii=False, indent=0))
    print(f"wrote {path} ({len(cases)} renderings by {renderer})")


def render_one(template, conv, add_generation_prompt, use_transformers):
    """(output, None) or (None, error message) as transformers' apply_chat_template renders."""
    try:
        if use_transformers:
            from transformers.utils.chat_template_utils import render_jinja_template
            rendered, _ = render_jinja_template(
                conversations=[conv], chat_template=template,
                add_generation_prompt=add_generation_prompt, bos_token="<s>", eos_token="</s>")
            return rendered[0], None
        # transformers' _compile_jinja_template: ImmutableSandboxedEnvironment(trim_blocks=True,
        # lstrip_blocks=True, extensions=[loopcontrols]) and a raise_exception global.
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        return env.from_string(template).render(
            messages=conv, add_generation_prompt=add_generation_prompt, bos_token="<s>",
            eos_token="</s>"), None
    except Exception as e:  # noqa: BLE001 - the golden records that rendering fails
        return None, str(e)


def fingerprint():
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in ("make_tokenizer_fixtures.py", "make_tokenizer_golden.py"):
        h.update((here / f).read_bytes())
    return h.hexdigest()


def write_all(root):
    root = Path(root)
    stamp = root / ".complete"
    if stamp.exists() and stamp.read_text() == fingerprint():
        print(f"{root}: present, skipped")
        return
    vocab, merges = train_vocab()
    for name, layout in (("llama2-spm", "llama2"), ("mistral-spm", "mistral"),
                         ("metaspace-split", "metaspace-split")):
        write_tokenizer(root, name, build(vocab, merges, layout))
    tok, text = legacy_metaspace(build(vocab, merges, "mistral"))
    write_tokenizer(root, "metaspace-legacy", tok, text)
    render_chat_goldens(root / "chat_templates.json")
    stamp.write_text(fingerprint())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write_all(sys.argv[1])
