// Tokenizer: byte-level BPE (GPT-2/Llama-3/SmolLM2) and SentencePiece-style BPE (Llama-2/Mistral).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "models/normalizer.h"
#include "models/pretokenizer.h"

namespace kiln {

class GgufFile;

enum class TokenizerKind {
  /// GPT-2 style: text is split by a pre-tokenizer, bytes are mapped through bytes_to_unicode and
  /// merged by merge rank.
  kByteLevelBpe,
  /// llama.cpp's `llama` (SPM) model: spaces become U+2581, adjacent pieces are merged by the
  /// score of the merged token, and characters missing from the vocab fall back to <0xNN> tokens.
  kSentencePieceBpe,
  /// Hugging Face `tokenizers`' BPE model with byte_fallback over a U+2581 vocabulary (Llama-2,
  /// Mistral tokenizer.json): text is normalized (Prepend/Replace) or Metaspace-pre-tokenized,
  /// each word starts as one symbol per character, merged by merge rank; a character missing from
  /// the vocabulary becomes its <0xNN> byte tokens (or unk).
  kBpeByteFallback,
};

/// Where a SentencePiece-style text gets its U+2581 prefix (HF Metaspace `prepend_scheme`).
enum class PrependScheme {
  kNever,
  kFirst,   // only at the start of the text
  kAlways,  // at the start of every text segment between added tokens
};

/// HF's Metaspace pre-tokenizer: spaces become `replacement`, a prefix is added per `prepend`,
/// and with `split` the text is cut before every replacement character.
struct Metaspace {
  std::string replacement = "\xE2\x96\x81";  // U+2581
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;
};

/// How an added token is matched in text (HF AddedToken options; GGUF tokens use the defaults).
struct AddedTokenOptions {
  bool lstrip = false;       // the match takes the whitespace before it
  bool rstrip = false;       // the match takes the whitespace after it
  bool single_word = false;  // only matched when no word character touches it
  bool normalized = false;   // matched in the normalized text (its content normalized too)
};

/// Token types, numbered as GGUF's `tokenizer.ggml.token_type` stores them.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // special tokens (<|im_start|>); matched in text only when parse_special
  kUserDefined = 4,  // added tokens that are always matched as a whole
  kUnused = 5,
  kByte = 6,  // SentencePiece byte-fallback tokens <0xNN>
};

/// Everything a tokenizer is built from, independent of the file it came from.
struct TokenizerSpec {
  TokenizerKind kind = TokenizerKind::kByteLevelBpe;
  std::vector<std::string> vocab;  // id -> token text (byte-level or U+2581 form)
  std::vector<std::pair<std::string, std::string>>
      merges;                    // byte-level BPE, highest priority first
  std::vector<float> scores;     // SentencePiece: one per token (higher merges first)
  std::vector<TokenType> types;  // one per token; empty means all kNormal
  PreTokenizerKind pre_tokenizer = PreTokenizerKind::kGpt2;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = false;          // whether prompts start with BOS
  bool add_space_prefix = true;  // SentencePiece: prefix " " to text at the start/after specials
  bool ignore_merges = false;    // BPE: a pre-token that is a whole vocab entry is one token
  // kBpeByteFallback:
  bool byte_fallback = true;           // unknown characters become <0xNN> tokens (else unk)
  bool fuse_unk = false;               // consecutive unknown characters give one unk
  Normalizer normalizer;               // applied to each text segment between added tokens
  std::optional<Metaspace> metaspace;  // the pre-tokenizer; none: the normalized text is one word
  // Options of added tokens by id; ids not listed use the defaults.
  std::vector<std::pair<int32_t, AddedTokenOptions>> added_token_options;
  std::string chat_template;  // the model's Jinja chat template, when it ships one
  std::string source;         // where the spec came from, for error messages
};

/// A loaded tokenizer. Immutable after construction and safe to use from several threads.
class Tokenizer {
 public:
  /// Validates `spec` (ids in range, merges over known tokens, consistent lengths) and builds the
  /// lookup tables.
  static absl::StatusOr<Tokenizer> from_spec(TokenizerSpec spec);
  /// Loads a Hugging Face tokenizer.json; a tokenizer_config.json in the same directory, when
  /// present, supplies bos/eos tokens, add_bos and the chat template (else chat_template.jinja
  /// beside it, as transformers >= 4.43 saves it). All must be regular files under 1 GiB (a FIFO
  /// or device is refused, not read).
  static absl::StatusOr<Tokenizer> from_tokenizer_json(const std::string& path);
  /// Same, from the files' contents (`config_json` may be empty); `source` names them in errors.
  static absl::StatusOr<Tokenizer> from_tokenizer_json_text(std::string_view tokenizer_json,
                                                            std::string_view config_json,
                                                            std::string_view source);
  /// Loads the `tokenizer.ggml.*` and `tokenizer.chat_template` metadata of a GGUF file.
  static absl::StatusOr<Tokenizer> from_gguf(const GgufFile& gguf);
  /// The spec a GGUF file describes (exposed for tests and `kiln inspect`).
  static absl::StatusOr<TokenizerSpec> spec_from_gguf(const GgufFile& gguf);

  /// Token ids of `text`. With `parse_special`, control tokens written in the text (<|im_start|>)
  /// become their ids; otherwise they are tokenized as plain text. User-defined added tokens are
  /// always matched. Added tokens follow HF's rules: matched leftmost-longest in the raw text, or
  /// in the normalized text when `normalized`, with their lstrip / rstrip / single_word options.
  /// BOS is prepended when `add_bos` and the vocabulary has one. Never fails: any byte string
  /// (valid UTF-8 or not) has an encoding.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true,
                              bool add_bos = false) const;
  /// The text of `ids` (special tokens rendered as their text, unless `skip_special`). Ids out of
  /// range are skipped. decode(encode(s)) == s for every s.
  std::string decode(absl::Span<const int32_t> ids, bool skip_special = false) const;

  /// Incremental detokenizer for streaming generation: returns text as soon as it is complete
  /// UTF-8 and never returns a partial code point (bytes that can never become valid UTF-8 are
  /// replaced by U+FFFD). The tokenizer must outlive it.
  class StreamDecoder {
   public:
    explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false)
        : tokenizer_(&tokenizer), skip_special_(skip_special) {}
    /// Text completed by `id` (possibly empty).
    std::string push(int32_t id);
    /// Whatever is still held back (an incomplete code point becomes U+FFFD); resets the state.
    std::string flush();

   private:
    const Tokenizer* tokenizer_;
    bool skip_special_;
    bool at_text_start_ = true;
    std::string pending_;  // bytes of an incomplete code point
  };

  int32_t bos_id() const { return spec_.bos_id; }
  int32_t eos_id() const { return spec_.eos_id; }
  int32_t unk_id() const { return spec_.unk_id; }
  int32_t pad_id() const { return spec_.pad_id; }
  bool add_bos() const { return spec_.add_bos; }
  TokenizerKind kind() const { return spec_.kind; }
  PreTokenizerKind pre_tokenizer() const { return spec_.pre_tokenizer; }
  /// Ids that end generation: EOS plus end-of-turn tokens the vocabulary has (<|im_end|>,
  /// <|eot_id|>, <|endoftext|>, ...), without duplicates.
  std::vector<int32_t> stop_ids() const;
  int32_t vocab_size() const { return static_cast<int32_t>(spec_.vocab.size()); }
  /// The vocabulary entry of `id` as stored (byte-level / U+2581 form); empty when out of range.
  std::string_view token_text(int32_t id) const;
  /// The id of a vocabulary entry, or nullopt.
  std::optional<int32_t> token_id(std::string_view text) const;
  TokenType token_type(int32_t id) const;
  bool is_special(int32_t id) const;
  const std::string& chat_template() const { return spec_.chat_template; }
  const std::string& source() const { return spec_.source; }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  struct SpecialToken {
    std::string text;  // as matched: the content, normalized for options.normalized
    int32_t id;
    bool control;  // matched only when parse_special
    AddedTokenOptions options;
  };

  struct Symbol;  // an element of the BPE working list

  Tokenizer() = default;
  // HF / llama.cpp BPE merging by merge rank over `syms` (token ids), in place.
  void merge_by_rank(std::vector<Symbol>& syms) const;
  // Appends the decoded bytes of `id`; `at_text_start` tracks SentencePiece's leading-space rule.
  void append_piece(int32_t id, bool skip_special, bool& at_text_start, std::string& out) const;
  // A span of text that is either an added token (id >= 0) or plain text (id < 0).
  struct Split {
    size_t begin, end;
    int32_t id;
  };
  // Cuts `text` at the added tokens of one pass (normalized or not), as HF's AddedVocabulary does:
  // leftmost-longest matches, then single_word, lstrip and rstrip.
  std::vector<Split> split_added(std::string_view text, bool normalized_pass,
                                 bool parse_special) const;
  // `at_text_start`: the fragment begins the whole text (Metaspace prepend_scheme "first").
  void encode_fragment(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const;
  void bpe_byte_level(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe_byte_fallback(std::string_view word, std::vector<int32_t>& out) const;
  void bpe_sentencepiece(std::string_view text, std::vector<int32_t>& out) const;

  TokenizerSpec spec_;
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::array<int32_t, 256> byte_token_{};        // byte -> its single-byte token, or -1
  std::vector<std::string> pieces_;              // id -> decoded bytes
  std::vector<SpecialToken> specials_;           // longest first
  std::array<bool, 256> special_first_byte_{};   // whether any special token starts with a byte
  bool has_normalized_specials_ = false;
  bool strip_at_start_ = false;       // decode drops the leading space encode added to the text
  bool strip_after_special_ = false;  // ... and after each special token
};

}  // namespace kiln
