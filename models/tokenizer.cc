// Tokenizer core: validation of a TokenizerSpec, BPE encoding (both kinds) and detokenization.
#include "models/tokenizer.h"

#include <algorithm>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/unicode.h"

namespace kiln {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// Debian's Abseil has its own string_view type; heterogeneous lookups need it.
absl::string_view av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// "<0x41>" -> 0x41, else -1.
int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else
      return -1;
  }
  return v;
}

// A symbol of the BPE working list: a token id (byte-level) or a byte span (SentencePiece), doubly
// linked so merges are O(1); `alive` is false once merged into its left neighbour.
struct Symbol {
  int32_t id;
  uint32_t start, len;
  int32_t prev, next;
  bool alive;
};

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::from_spec(TokenizerSpec spec) {
  const std::string& src = spec.source.empty() ? std::string("tokenizer") : spec.source;
  const size_t n = spec.vocab.size();
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat(src, ": the vocabulary is empty"));
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": vocabulary too large"));
  }
  if (spec.types.empty()) spec.types.assign(n, TokenType::kNormal);
  if (spec.types.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d token types for %d tokens", src, spec.types.size(), n));
  }
  if (spec.kind == TokenizerKind::kSentencePieceBpe && spec.scores.size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: SentencePiece tokenizer has %d scores for %d tokens", src, spec.scores.size(), n));
  }
  for (auto [name, id] : {std::pair<const char*, int32_t*>{"bos", &spec.bos_id},
                          {"eos", &spec.eos_id},
                          {"unk", &spec.unk_id},
                          {"pad", &spec.pad_id}}) {
    if (*id < -1 || *id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %s token id %d is outside the vocabulary (size %d)", src, name, *id, n));
    }
  }

  Tokenizer t;
  t.token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // Duplicates keep the first id, as llama.cpp and HF do.
    if (!spec.vocab[i].empty()) t.token_to_id_.try_emplace(spec.vocab[i], static_cast<int32_t>(i));
  }
  t.byte_token_.fill(-1);
  if (spec.kind == TokenizerKind::kByteLevelBpe) {
    for (int b = 0; b < 256; ++b) {
      std::string s;
      unicode::append_utf8(unicode::byte_to_unicode(static_cast<uint8_t>(b)), s);
      if (auto it = t.token_to_id_.find(av(s)); it != t.token_to_id_.end())
        t.byte_token_[b] = it->second;
    }
    t.merges_.reserve(spec.merges.size());
    for (size_t r = 0; r < spec.merges.size(); ++r) {
      const auto& [a, b] = spec.merges[r];
      auto ia = t.token_to_id_.find(a), ib = t.token_to_id_.find(b);
      auto im = t.token_to_id_.find(absl::StrCat(a, b));
      if (ia == t.token_to_id_.end() || ib == t.token_to_id_.end() || im == t.token_to_id_.end()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: merges[%d] ('%s' '%s') uses a token that is not in the vocabulary", src, r, a, b));
      }
      // An earlier (higher-priority) duplicate of a pair wins.
      t.merges_.try_emplace(pair_key(ia->second, ib->second),
                            Merge{static_cast<int32_t>(r), im->second});
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      if (spec.types[i] != TokenType::kByte && spec.types[i] != TokenType::kNormal) continue;
      const int b = parse_byte_token(spec.vocab[i]);
      if (b >= 0 && t.byte_token_[b] < 0) t.byte_token_[b] = static_cast<int32_t>(i);
    }
  }

  // Decoded bytes of every token, computed once so decode is a concatenation.
  t.pieces_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& v = spec.vocab[i];
    std::string& p = t.pieces_[i];
    const TokenType type = spec.types[i];
    if (type == TokenType::kControl || type == TokenType::kUserDefined ||
        type == TokenType::kUnknown) {
      p = v;  // special tokens are rendered as written
    } else if (spec.kind == TokenizerKind::kByteLevelBpe) {
      for (size_t k = 0; k < v.size();) {
        unicode::DecodedChar c = unicode::decode_utf8(v, k);
        const int b = unicode::unicode_to_byte(c.cp);
        if (b >= 0)
          p.push_back(static_cast<char>(b));
        else
          p.append(v, k, c.length);  // not in the byte alphabet: keep the text as is
        k += c.length;
      }
    } else if (int b = parse_byte_token(v); type == TokenType::kByte && b >= 0) {
      p.push_back(static_cast<char>(b));
    } else {
      for (size_t k = 0; k < v.size();) {
        if (v.compare(k, kSpaceMarker.size(), kSpaceMarker) == 0) {
          p.push_back(' ');
          k += kSpaceMarker.size();
        } else {
          p.push_back(v[k++]);
        }
      }
    }
    if (type == TokenType::kControl || type == TokenType::kUserDefined ||
        type == TokenType::kUnknown) {
      if (!v.empty()) {
        t.specials_.push_back({v, static_cast<int32_t>(i), type != TokenType::kUserDefined});
      }
    }
  }
  // Longest first, so a special token that contains another one wins at the same position.
  std::stable_sort(
      t.specials_.begin(), t.specials_.end(),
      [](const SpecialToken& a, const SpecialToken& b) { return a.text.size() > b.text.size(); });
  for (const SpecialToken& st : t.specials_) {
    t.special_first_byte_[static_cast<uint8_t>(st.text[0])] = true;
  }
  t.spec_ = std::move(spec);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special,
                                       bool add_bos) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_bos && spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  // Split the text at special tokens (leftmost match, longest at a position), then tokenize the
  // plain fragments between them.
  bool after_special = true;
  size_t frag_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    const SpecialToken* hit = nullptr;
    // Most bytes cannot start a special token; skip the scan over them (Llama-3 has 256).
    if (!special_first_byte_[static_cast<uint8_t>(text[i])]) {
      ++i;
      continue;
    }
    for (const SpecialToken& s : specials_) {
      if (s.control && !parse_special) continue;
      if (text.compare(i, s.text.size(), s.text) == 0) {
        hit = &s;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    if (i > frag_start) {
      encode_fragment(text.substr(frag_start, i - frag_start), after_special, out);
    }
    out.push_back(hit->id);
    after_special = true;
    i += hit->text.size();
    frag_start = i;
  }
  if (frag_start < text.size()) encode_fragment(text.substr(frag_start), after_special, out);
  return out;
}

void Tokenizer::encode_fragment(std::string_view text, bool after_special,
                                std::vector<int32_t>& out) const {
  if (spec_.kind == TokenizerKind::kByteLevelBpe) {
    for (std::string_view piece : pretokenize(spec_.pre_tokenizer, text))
      bpe_byte_level(piece, out);
    return;
  }
  // SentencePiece: llama.cpp prefixes a space at the start of the text and after every special
  // token, then writes spaces as U+2581; the whole fragment is one BPE word.
  std::string escaped;
  escaped.reserve(text.size() + 8);
  if (spec_.add_space_prefix && after_special) escaped.append(kSpaceMarker);
  for (char c : text) {
    if (c == ' ')
      escaped.append(kSpaceMarker);
    else
      escaped.push_back(c);
  }
  bpe_sentencepiece(escaped, out);
}

void Tokenizer::bpe_byte_level(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (spec_.ignore_merges) {
    if (auto it = token_to_id_.find(unicode::bytes_to_byte_level(piece));
        it != token_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<Symbol> syms(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) {
    syms[i] = {byte_token_[static_cast<uint8_t>(piece[i])],
               static_cast<uint32_t>(i),
               1,
               static_cast<int32_t>(i) - 1,
               i + 1 < piece.size() ? static_cast<int32_t>(i + 1) : -1,
               true};
  }
  // Lowest rank first, leftmost first among equal ranks (as HF and llama.cpp). Entries go stale
  // when a neighbour merges; they are checked against the current symbols when popped.
  struct Candidate {
    int32_t rank, left, right, left_id, right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0 || syms[l].id < 0 || syms[r].id < 0) return;
    auto it = merges_.find(pair_key(syms[l].id, syms[r].id));
    if (it != merges_.end()) queue.push({it->second.rank, l, r, syms[l].id, syms[r].id});
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i) try_pair(i, i + 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = syms[c.left];
    Symbol& r = syms[c.right];
    if (!l.alive || !r.alive || l.next != c.right || l.id != c.left_id || r.id != c.right_id) {
      continue;
    }
    l.id = merges_.find(pair_key(c.left_id, c.right_id))->second.merged;
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    r.alive = false;
    try_pair(l.prev, c.left);
    try_pair(c.left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    // A byte whose byte-level character the vocabulary lacks is dropped, as HF (BPE without
    // unk_token) and llama.cpp do; SmolLM2's vocabulary lacks 21 of the 256 bytes.
    if (syms[i].id >= 0) out.push_back(syms[i].id);
  }
}

void Tokenizer::bpe_sentencepiece(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<Symbol> syms;
  for (size_t i = 0; i < text.size();) {
    const int len = unicode::decode_utf8(text, i).length;
    const int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back(
        {-1, static_cast<uint32_t>(i), static_cast<uint32_t>(len), idx - 1, idx + 1, true});
    i += len;
  }
  syms.back().next = -1;
  // Highest score first, leftmost first among equal scores (llama.cpp's llm_tokenizer_spm).
  struct Candidate {
    float score;
    int32_t left, right;
    uint32_t len;
    bool operator<(const Candidate& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Candidate> queue;
  auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const uint32_t len = syms[l].len + syms[r].len;
    auto it = token_to_id_.find(av(text.substr(syms[l].start, len)));
    if (it != token_to_id_.end()) queue.push({spec_.scores[it->second], l, r, len});
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i) try_pair(i, i + 1);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = syms[c.left];
    Symbol& r = syms[c.right];
    if (!l.alive || !r.alive || l.next != c.right || l.len + r.len != c.len) continue;
    l.len = c.len;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    r.alive = false;
    try_pair(l.prev, c.left);
    try_pair(c.left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const std::string_view s = text.substr(syms[i].start, syms[i].len);
    if (auto it = token_to_id_.find(av(s)); it != token_to_id_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (char c : s) {  // byte fallback
      const int32_t b = byte_token_[static_cast<uint8_t>(c)];
      if (b >= 0)
        out.push_back(b);
      else if (spec_.unk_id >= 0)
        out.push_back(spec_.unk_id);
    }
  }
}

void Tokenizer::append_piece(int32_t id, bool skip_special, bool& at_text_start,
                             std::string& out) const {
  if (id < 0 || id >= vocab_size()) return;
  if (is_special(id)) {
    if (!skip_special) out.append(pieces_[id]);
    at_text_start = true;
    return;
  }
  std::string_view p = pieces_[id];
  // Undo the space encode() prefixed (SentencePiece with add_space_prefix), as llama.cpp does.
  if (at_text_start && spec_.kind == TokenizerKind::kSentencePieceBpe && spec_.add_space_prefix &&
      !p.empty() && p.front() == ' ') {
    p.remove_prefix(1);
  }
  at_text_start = false;
  out.append(p);
}

std::string Tokenizer::decode(absl::Span<const int32_t> ids, bool skip_special) const {
  std::string out;
  bool at_text_start = true;
  for (int32_t id : ids) append_piece(id, skip_special, at_text_start, out);
  return out;
}

std::string Tokenizer::StreamDecoder::push(int32_t id) {
  tokenizer_->append_piece(id, skip_special_, at_text_start_, pending_);
  // Emit every complete code point; bytes that can never become valid become U+FFFD so the
  // stream is always valid UTF-8.
  const size_t ready = unicode::complete_utf8_prefix(pending_);
  std::string out;
  for (size_t i = 0; i < ready;) {
    unicode::DecodedChar c = unicode::decode_utf8(pending_, i);
    if (c.cp == unicode::kInvalid)
      out.append("\xEF\xBF\xBD");
    else
      out.append(pending_, i, c.length);
    i += c.length;
  }
  pending_.erase(0, ready);
  return out;
}

std::string Tokenizer::StreamDecoder::flush() {
  std::string out = pending_.empty() ? "" : "\xEF\xBF\xBD";
  pending_.clear();
  at_text_start_ = true;
  return out;
}

std::vector<int32_t> Tokenizer::stop_ids() const {
  std::vector<int32_t> ids;
  if (spec_.eos_id >= 0) ids.push_back(spec_.eos_id);
  for (std::string_view s : {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>",
                             "<|end_of_text|>", "</s>", "<end_of_turn>"}) {
    std::optional<int32_t> id = token_id(s);
    if (id && is_special(*id) && std::find(ids.begin(), ids.end(), *id) == ids.end()) {
      ids.push_back(*id);
    }
  }
  return ids;
}

std::string_view Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return spec_.vocab[id];
}

std::optional<int32_t> Tokenizer::token_id(std::string_view text) const {
  auto it = token_to_id_.find(av(text));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUnused;
  return spec_.types[id];
}

bool Tokenizer::is_special(int32_t id) const {
  const TokenType t = token_type(id);
  return t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown;
}

}  // namespace kiln
