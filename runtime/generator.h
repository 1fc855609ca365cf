// Generator: text generation on the CPU reference backend — prefill of whole prompts (chunked to
// the step's token budget), then one token per step for every live sequence in one ragged batch;
// greedy or sampled; stops on EOS/stop tokens, stop strings, max tokens and the context length.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/cpu_model.h"
#include "runtime/kv_cache.h"
#include "runtime/sampler.h"

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

struct GeneratorOptions {
  /// KV pages in the pool; 0 sizes it for every request's prompt + max_new_tokens.
  int64_t num_pages = 0;
};

/// Streams text: (request index, text piece). Pieces never split a UTF-8 character or reveal
/// part of a stop string.
using TextCallback = std::function<void(size_t request, const std::string& piece)>;

class Generator {
 public:
  explicit Generator(CpuModel& model, GeneratorOptions options = {})
      : model_(model), options_(options) {}

  /// Runs all requests together. Errors: empty prompt, prompt longer than the context, the KV
  /// page pool running out (the message says how many pages were needed and free).
  absl::StatusOr<std::vector<GenerationResult>> generate(
      const std::vector<GenerationRequest>& requests, const TextCallback& on_text = nullptr,
      GenerationStats* stats = nullptr);

  /// Teacher forcing: the logits after each token of `ids`, feeding one token per step (the
  /// decode path), so row i predicts token i+1.
  absl::StatusOr<std::vector<std::vector<float>>> score_incremental(
      const std::vector<int32_t>& ids);
  /// The logits after the last token of `ids` from one prefill step (the prefill path).
  absl::StatusOr<std::vector<float>> prefill_logits(const std::vector<int32_t>& ids);

 private:
  CpuModel& model_;
  GeneratorOptions options_;
};

}  // namespace kiln
