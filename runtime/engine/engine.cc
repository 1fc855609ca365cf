// The generation loop: requests -> ragged steps on the backend -> streamed text.
#include "runtime/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "runtime/engine/stop_criteria.h"
#include "runtime/engine/text_stream.h"

namespace kiln {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One live sequence of a generate() call.
struct Sequence {
  size_t request = 0;
  SeqId seq = 0;
  std::vector<int32_t> pending;  // tokens to feed (prompt chunk left, or the last sampled token)
  int64_t length = 0;            // tokens in the KV cache
  std::optional<SamplingStream> sampling;
  std::optional<TextStream> text;
  std::vector<int32_t> stop_ids;  // tokens that end this sequence
  bool done = false;
};

// The row of a prompt chunk is no prediction yet: the backend still picks a token from it, so
// give it a greedy setting without touching the sequence's random stream.
constexpr SequenceSampling kUnusedRow{};

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken: return "stop token";
    case FinishReason::kStopString: return "stop string";
    case FinishReason::kMaxTokens: return "max tokens";
    case FinishReason::kContextFull: return "context full";
  }
  return "?";
}

absl::StatusOr<KvPageTables> Engine::make_page_tables() const {
  return KvPageTables::create(
      {backend_.plan().kv.page_size, static_cast<int32_t>(backend_.kv_pages())});
}

absl::StatusOr<StepResult> Engine::step(KvPageTables& tables, const std::vector<StepSequence>& seqs,
                                        std::vector<int32_t> tokens,
                                        std::vector<SequenceSampling> sampling,
                                        bool return_logits) {
  absl::StatusOr<StepMetadata> meta = build_step_metadata(tables, seqs);
  if (!meta.ok()) return meta.status();
  if (absl::Status s = backend_.copy_kv_pages(tables.take_pending_copies()); !s.ok()) return s;
  std::optional<CascadeLayout> cascade =
      step_cascade(*meta, backend_.plan().kv.page_size, cascade_);
  StepRequest req{StepInputs{std::move(tokens), std::move(*meta), std::move(cascade)},
                  std::move(sampling), return_logits};
  return backend_.run_step(req);
}

absl::StatusOr<std::vector<GenerationResult>> Engine::generate(
    const std::vector<GenerationRequest>& requests, const TextCallback& on_text,
    GenerationStats* stats) {
  const ModelConfig& c = backend_.plan().model;
  const StepLimits& lim = backend_.plan().limits;
  const int64_t context =
      lim.max_context > 0 ? std::min(lim.max_context, c.max_context) : c.max_context;
  if (requests.empty()) return std::vector<GenerationResult>();
  if (static_cast<int64_t>(requests.size()) > lim.max_seqs) {
    return absl::InvalidArgumentError(absl::StrCat(requests.size(), " requests exceed the ",
                                                   lim.max_seqs, " sequences a step holds"));
  }
  for (const GenerationRequest& r : requests) {
    if (r.prompt.empty())
      return absl::InvalidArgumentError("empty prompt: give at least one token");
    if (static_cast<int64_t>(r.prompt.size()) > context) {
      return absl::InvalidArgumentError(
          absl::StrCat("the prompt has ", r.prompt.size(), " tokens; the context holds ", context));
    }
    if (r.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens must be >= 0");
    for (int32_t t : r.prompt) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " is outside the vocabulary (", c.vocab_size, ")"));
      }
    }
    if (absl::Status s = validate(r.sampling); !s.ok()) return s;
  }
  absl::StatusOr<KvPageTables> tables = make_page_tables();
  if (!tables.ok()) return tables.status();

  std::vector<GenerationResult> results(requests.size());
  std::vector<Sequence> seqs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    Sequence& s = seqs[i];
    s.request = i;
    s.seq = tables->add_sequence();
    s.pending = requests[i].prompt;
    s.text.emplace(tokenizer_, requests[i].stop_strings);
    s.sampling.emplace(*SamplingStream::create(requests[i].sampling));  // validated above
    if (requests[i].max_new_tokens == 0) s.done = true;
    s.stop_ids = resolve_stop_ids(requests[i].stop_ids, c, tokenizer_);
  }
  GenerationStats local;
  GenerationStats& st = stats ? *stats : local;
  for (const GenerationRequest& r : requests)
    st.prompt_tokens += static_cast<int64_t>(r.prompt.size());

  while (true) {
    // Assemble a step: every live sequence contributes its pending tokens, prompts chunked so the
    // step stays within the token budget (each sequence gets at least one token).
    std::vector<StepSequence> steps;
    std::vector<int32_t> tokens;
    std::vector<SequenceSampling> sampling;
    std::vector<size_t> members;
    int64_t budget = lim.max_tokens;
    bool prefill = false;
    for (Sequence& s : seqs) {
      if (s.done || budget <= 0) continue;
      const int64_t take = std::min<int64_t>(static_cast<int64_t>(s.pending.size()), budget);
      tokens.insert(tokens.end(), s.pending.begin(), s.pending.begin() + take);
      steps.push_back({s.seq, static_cast<int32_t>(take)});
      // Only a row that ends the pending tokens predicts the next token; only it draws.
      sampling.push_back(take == static_cast<int64_t>(s.pending.size()) ? s.sampling->next()
                                                                        : kUnusedRow);
      members.push_back(s.request);
      budget -= take;
      prefill = prefill || take > 1 || s.length == 0;
    }
    if (steps.empty()) break;
    const double t0 = now_seconds();
    absl::StatusOr<StepResult> out =
        step(*tables, steps, std::move(tokens), std::move(sampling), /*return_logits=*/false);
    if (!out.ok()) return out.status();
    (prefill ? st.prefill_seconds : st.decode_seconds) += now_seconds() - t0;
    st.steps++;
    for (size_t k = 0; k < members.size(); ++k) {
      Sequence& s = seqs[members[k]];
      const GenerationRequest& r = requests[s.request];
      GenerationResult& res = results[s.request];
      s.length += steps[k].num_new_tokens;
      s.pending.erase(s.pending.begin(), s.pending.begin() + steps[k].num_new_tokens);
      if (!s.pending.empty()) continue;  // a prompt chunk: its row is not a prediction yet
      const int32_t token = out->tokens[k];
      if (std::find(s.stop_ids.begin(), s.stop_ids.end(), token) != s.stop_ids.end()) {
        s.done = true;
        res.finish = FinishReason::kStopToken;
      } else {
        res.tokens.push_back(token);
        st.generated_tokens++;
        if (s.text->push(token)) {
          s.done = true;
          res.finish = FinishReason::kStopString;
        } else if (static_cast<int64_t>(res.tokens.size()) >= r.max_new_tokens) {
          s.done = true;
          res.finish = FinishReason::kMaxTokens;
        } else if (s.length >= context) {
          s.done = true;  // the sampled token would have no KV slot left in the context
          res.finish = FinishReason::kContextFull;
        } else {
          s.pending.push_back(token);
        }
      }
      if (s.done) s.text->finish();
      const std::string piece = s.text->take();
      if (on_text && !piece.empty()) on_text(s.request, piece);
      if (s.done) {
        res.text = s.text->text();
        if (absl::Status f = tables->free(s.seq); !f.ok()) return f;
      }
    }
  }
  return results;
}

absl::StatusOr<std::vector<std::vector<float>>> Engine::score_incremental(
    const std::vector<int32_t>& ids) {
  if (ids.empty()) return absl::InvalidArgumentError("empty token sequence");
  absl::StatusOr<KvPageTables> tables = make_page_tables();
  if (!tables.ok()) return tables.status();
  SeqId seq = tables->add_sequence();
  std::vector<std::vector<float>> rows;
  for (int32_t id : ids) {
    absl::StatusOr<StepResult> out = step(*tables, {{seq, 1}}, {id}, {kUnusedRow}, true);
    if (!out.ok()) return out.status();
    rows.push_back(std::move(out->logits));
  }
  return rows;
}

absl::StatusOr<std::vector<float>> Engine::prefill_logits(const std::vector<int32_t>& ids) {
  if (ids.empty()) return absl::InvalidArgumentError("empty token sequence");
  absl::StatusOr<KvPageTables> tables = make_page_tables();
  if (!tables.ok()) return tables.status();
  SeqId seq = tables->add_sequence();
  absl::StatusOr<StepResult> out =
      step(*tables, {{seq, static_cast<int32_t>(ids.size())}}, ids, {kUnusedRow}, true);
  if (!out.ok()) return out.status();
  return std::move(out->logits);
}

}  // namespace kiln
