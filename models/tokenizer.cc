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

// The last code point of `text` (kInvalid for a trailing invalid byte) and its length.
size_t last_char_length(std::string_view text) {
  for (size_t len = 1; len <= 4 && len <= text.size(); ++len) {
    const unicode::DecodedChar c = unicode::decode_utf8(text, text.size() - len);
    if (c.cp != unicode::kInvalid && static_cast<size_t>(c.length) == len) return len;
  }
  return 1;
}
char32_t last_char(std::string_view text) {
  const size_t len = last_char_length(text);
  const unicode::DecodedChar c = unicode::decode_utf8(text, text.size() - len);
  return static_cast<size_t>(c.length) == len ? c.cp : unicode::kInvalid;
}

}  // namespace

// A symbol of the BPE working list: a token id (byte-level) or a byte span (SentencePiece), doubly
// linked so merges are O(1); `alive` is false once merged into its left neighbour.
struct Tokenizer::Symbol {
  int32_t id;
  uint32_t start, len;
  int32_t prev, next;
  bool alive;
};

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
  } else {
    for (size_t i = 0; i < n; ++i) {
      if (spec.types[i] != TokenType::kByte && spec.types[i] != TokenType::kNormal) continue;
      const int b = parse_byte_token(spec.vocab[i]);
      if (b >= 0 && t.byte_token_[b] < 0) t.byte_token_[b] = static_cast<int32_t>(i);
    }
  }
  if (spec.kind != TokenizerKind::kSentencePieceBpe) {
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
  }
  const std::string space_marker =
      spec.metaspace ? spec.metaspace->replacement : std::string(kSpaceMarker);

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
    } else if (int b = parse_byte_token(v);
               b >= 0 &&
               (type == TokenType::kByte || t.byte_token_[b] == static_cast<int32_t>(i))) {
      p.push_back(static_cast<char>(b));
    } else {
      for (size_t k = 0; k < v.size();) {
        if (!space_marker.empty() && v.compare(k, space_marker.size(), space_marker) == 0) {
          p.push_back(' ');
          k += space_marker.size();
        } else {
          p.push_back(v[k++]);
        }
      }
    }
    if (type == TokenType::kControl || type == TokenType::kUserDefined ||
        type == TokenType::kUnknown) {
      if (!v.empty()) {
        t.specials_.push_back({v, static_cast<int32_t>(i), type != TokenType::kUserDefined, {}});
      }
    }
  }
  absl::flat_hash_map<int32_t, size_t> special_index;  // id -> position in specials_
  for (size_t k = 0; k < t.specials_.size(); ++k) special_index.emplace(t.specials_[k].id, k);
  for (const auto& [id, options] : spec.added_token_options) {
    auto found = special_index.find(id);
    if (found == special_index.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: added-token options for id %d, which is not an added or special token", src, id));
    }
    SpecialToken* it = &t.specials_[found->second];
    it->options = options;
    // HF matches a normalized added token by its normalized content.
    if (options.normalized) {
      it->text = spec.normalizer.apply(it->text);
      t.has_normalized_specials_ = true;
    }
  }
  std::erase_if(t.specials_, [](const SpecialToken& st) { return st.text.empty(); });
  // Where encode adds a space the text did not have, decode takes it away again.
  switch (spec.kind) {
    case TokenizerKind::kByteLevelBpe: break;
    case TokenizerKind::kSentencePieceBpe:
      t.strip_at_start_ = t.strip_after_special_ = spec.add_space_prefix;
      break;
    case TokenizerKind::kBpeByteFallback: {
      PrependScheme scheme = PrependScheme::kNever;
      if (spec.metaspace) {
        scheme = spec.metaspace->prepend;
      } else if (!spec.normalizer.steps().empty() &&
                 spec.normalizer.steps()[0].kind == Normalizer::StepKind::kPrepend &&
                 spec.normalizer.steps()[0].a == kSpaceMarker) {
        scheme = PrependScheme::kAlways;  // Llama-2's Prepend("▁"): every segment
      }
      t.strip_at_start_ = scheme != PrependScheme::kNever;
      t.strip_after_special_ = scheme == PrependScheme::kAlways;
      break;
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

std::vector<Tokenizer::Split> Tokenizer::split_added(std::string_view text, bool normalized_pass,
                                                     bool parse_special) const {
  std::vector<Split> out;
  size_t start_offset = 0;  // end of the last emitted split
  size_t i = 0;
  while (i < text.size()) {
    // Most bytes cannot start a special token; skip the scan over them (Llama-3 has 256).
    if (!special_first_byte_[static_cast<uint8_t>(text[i])]) {
      ++i;
      continue;
    }
    const SpecialToken* hit = nullptr;
    for (const SpecialToken& s : specials_) {  // longest first: leftmost-longest matching
      if (s.options.normalized != normalized_pass) continue;
      if (text.compare(i, s.text.size(), s.text) == 0) {
        hit = &s;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + hit->text.size();
    i = stop;  // a discarded match is skipped as a whole, as HF's non-overlapping search does
    if (hit->control && !parse_special) continue;
    if (hit->options.single_word) {
      const bool word_before = start > 0 && unicode::is_word_char(last_char(text.substr(0, start)));
      const bool word_after =
          stop < text.size() && unicode::is_word_char(unicode::decode_utf8(text, stop).cp);
      if (word_before || word_after) continue;
    }
    if (hit->options.lstrip) {
      size_t s = start;
      while (s > start_offset && unicode::is_whitespace(last_char(text.substr(0, s)))) {
        s -= last_char_length(text.substr(0, s));
      }
      start = s;
    }
    if (hit->options.rstrip) {
      while (stop < text.size()) {
        const unicode::DecodedChar c = unicode::decode_utf8(text, stop);
        if (!unicode::is_whitespace(c.cp)) break;
        stop += c.length;
      }
      i = stop;
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, hit->id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
  return out;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special,
                                       bool add_bos) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_bos && spec_.bos_id >= 0) out.push_back(spec_.bos_id);
  // As HF's AddedVocabulary: cut the raw text at the added tokens matched as written, normalize
  // each plain segment, cut that at the normalized added tokens, and tokenize what is left.
  for (const Split& seg : split_added(text, /*normalized_pass=*/false, parse_special)) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      continue;
    }
    const std::string_view raw = text.substr(seg.begin, seg.end - seg.begin);
    if (spec_.normalizer.empty() && !has_normalized_specials_) {
      encode_fragment(raw, seg.begin == 0, out);
      continue;
    }
    const std::string norm = spec_.normalizer.apply(raw);
    for (const Split& sub : split_added(norm, /*normalized_pass=*/true, parse_special)) {
      if (sub.id >= 0) {
        out.push_back(sub.id);
      } else {
        encode_fragment(std::string_view(norm).substr(sub.begin, sub.end - sub.begin),
                        seg.begin == 0 && sub.begin == 0, out);
      }
    }
  }
  return out;
}

void Tokenizer::encode_fragment(std::string_view text, bool at_text_start,
                                std::vector<int32_t>& out) const {
  switch (spec_.kind) {
    case TokenizerKind::kByteLevelBpe:
      for (std::string_view piece : pretokenize(spec_.pre_tokenizer, text))
        bpe_byte_level(piece, out);
      return;
    case TokenizerKind::kSentencePieceBpe: {
      // llama.cpp prefixes a space at the start of the text and after every special token (each
      // fragment is one of those), then writes spaces as U+2581; the fragment is one BPE word.
      std::string escaped;
      escaped.reserve(text.size() + 8);
      if (spec_.add_space_prefix) escaped.append(kSpaceMarker);
      for (char c : text) {
        if (c == ' ')
          escaped.append(kSpaceMarker);
        else
          escaped.push_back(c);
      }
      bpe_sentencepiece(escaped, out);
      return;
    }
    case TokenizerKind::kBpeByteFallback: {
      if (!spec_.metaspace) {
        bpe_byte_fallback(text, out);
        return;
      }
      // HF Metaspace: spaces -> replacement, the prefix per prepend_scheme (never doubled), then
      // with `split` one word per replacement character (each word starts with it).
      const Metaspace& m = *spec_.metaspace;
      std::string s;
      s.reserve(text.size() + 8);
      for (char c : text) {
        if (c == ' ')
          s.append(m.replacement);
        else
          s.push_back(c);
      }
      const bool prepend = m.prepend == PrependScheme::kAlways ||
                           (m.prepend == PrependScheme::kFirst && at_text_start);
      if (prepend && !s.starts_with(m.replacement)) s.insert(0, m.replacement);
      if (!m.split || m.replacement.empty()) {
        bpe_byte_fallback(s, out);
        return;
      }
      const std::string_view sv = s;
      size_t word = 0;
      for (size_t p = sv.find(m.replacement, 1); p != std::string_view::npos;
           p = sv.find(m.replacement, p + m.replacement.size())) {
        bpe_byte_fallback(sv.substr(word, p - word), out);
        word = p;
      }
      bpe_byte_fallback(sv.substr(word), out);
      return;
    }
  }
}

void Tokenizer::merge_by_rank(std::vector<Symbol>& syms) const {
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
  merge_by_rank(syms);
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    // A byte whose byte-level character the vocabulary lacks is dropped, as HF (BPE without
    // unk_token) and llama.cpp do; SmolLM2's vocabulary lacks 21 of the 256 bytes.
    if (syms[i].id >= 0) out.push_back(syms[i].id);
  }
}

void Tokenizer::bpe_byte_fallback(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (spec_.ignore_merges) {
    if (auto it = token_to_id_.find(av(word)); it != token_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // One symbol per character (HF BPE's merge_word); an invalid UTF-8 byte is a character the
  // vocabulary cannot hold, so it takes the byte-fallback path like any unknown one.
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  bool last_was_unk = false;
  auto push = [&](int32_t id, size_t start, size_t len) {
    const int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back(
        {id, static_cast<uint32_t>(start), static_cast<uint32_t>(len), idx - 1, idx + 1, true});
  };
  for (size_t i = 0; i < word.size();) {
    const int len = unicode::decode_utf8(word, i).length;
    const std::string_view ch = word.substr(i, len);
    if (auto it = token_to_id_.find(av(ch)); it != token_to_id_.end()) {
      push(it->second, i, len);
      last_was_unk = false;
    } else if (spec_.byte_fallback && std::all_of(ch.begin(), ch.end(), [&](char c) {
                 return byte_token_[static_cast<uint8_t>(c)] >= 0;
               })) {
      for (size_t k = 0; k < ch.size(); ++k) {
        push(byte_token_[static_cast<uint8_t>(ch[k])], i + k, 1);
      }
      last_was_unk = false;
    } else if (spec_.unk_id >= 0) {
      if (spec_.fuse_unk && last_was_unk) {
        syms.back().len += len;
      } else {
        push(spec_.unk_id, i, len);
      }
      last_was_unk = true;
    }  // no unk token: the character is dropped, as HF does
    i += len;
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  merge_by_rank(syms);
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
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
    at_text_start = strip_after_special_;
    return;
  }
  std::string_view p = pieces_[id];
  // Undo the space encode() prefixed (SentencePiece-style), as llama.cpp and HF's decoders do.
  if (at_text_start && strip_at_start_ && !p.empty() && p.front() == ' ') p.remove_prefix(1);
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
