// Engine: text generation on any Backend — prefill of whole prompts (chunked to the step's token
// budget), then one token per step for every live sequence in one ragged batch; greedy or
// sampled (the engine draws each sequence's uniform, the backend picks the token); stops on
// EOS/stop tokens, stop strings, max tokens and the context length. It owns the KV page tables;
// the backend owns the KV storage they index.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/tokenizer.h"
#include "runtime/backend.h"
#include "runtime/engine/sampling.h"
#include "runtime/kv/page_tables.h"
#include "runtime/kv/step_metadata.h"

namespace kiln {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int64_t max_new_tokens = 128;
  std::vector<std::string> stop_strings;
  /// Token ids that end generation (not part of the output). Empty = the model's EOS ids plus
  /// the tokenizer's stop ids.
  std::vector<int32_t> stop_ids;
};

enum class FinishReason { kStopToken, kStopString, kMaxTokens, kContextFull };
const char* finish_reason_name(FinishReason reason);

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated tokens (without a final stop token)
  std::string text;             // their text, cut before a stop string
  FinishReason finish = FinishReason::kMaxTokens;
};

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t steps = 0;
};

/// Streams text: (request index, text piece). Pieces never split a UTF-8 character or reveal
/// part of a stop string.
using TextCallback = std::function<void(size_t request, const std::string& piece)>;

class Engine {
 public:
  /// Both must outlive the engine. The model's config, limits and KV page size come from
  /// `backend.plan()`; the page tables are sized to `backend.kv_pages()`.
  /// `cascade`: whether decode steps whose sequences share prefix pages carry their cascade
  /// layout (StepInputs::cascade).
  Engine(Backend& backend, const Tokenizer& tokenizer, CascadeMode cascade = CascadeMode::kAuto)
      : backend_(backend), tokenizer_(tokenizer), cascade_(cascade) {}

  /// Runs all requests together. Errors: empty prompt, prompt longer than the context, more
  /// requests than a step holds, the KV page pool running out (the message says how many pages
  /// were needed and free), and any backend error.
  absl::StatusOr<std::vector<GenerationResult>> generate(
      const std::vector<GenerationRequest>& requests, const TextCallback& on_text = nullptr,
      GenerationStats* stats = nullptr);

  /// Teacher forcing: the logits after each token of `ids`, feeding one token per step (the
  /// decode path), so row i predicts token i+1.
  absl::StatusOr<std::vector<std::vector<float>>> score_incremental(
      const std::vector<int32_t>& ids);
  /// The logits after the last token of `ids` from one prefill step (the prefill path).
  absl::StatusOr<std::vector<float>> prefill_logits(const std::vector<int32_t>& ids);

  Backend& backend() { return backend_; }

 private:
  absl::StatusOr<KvPageTables> make_page_tables() const;
  // One ragged step: reserves the slots, has the backend run the copy-on-writes and the step.
  absl::StatusOr<StepResult> step(KvPageTables& tables, const std::vector<StepSequence>& seqs,
                                  std::vector<int32_t> tokens,
                                  std::vector<SequenceSampling> sampling, bool return_logits);

  Backend& backend_;
  const Tokenizer& tokenizer_;
  CascadeMode cascade_;
};

}  // namespace kiln
