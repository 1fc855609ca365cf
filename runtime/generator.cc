// The generation loop on the reference backend.
#include "runtime/generator.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "runtime/step_metadata.h"

namespace kiln {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Length of the longest suffix of `text` that is a proper prefix of some stop string: that much
// must be held back from the stream until the next token shows whether a stop string completes.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = 0;
  for (const std::string& stop : stops) {
    for (size_t n = std::min(stop.size() - 1, text.size()); n > keep; --n) {
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  return keep;
}

// One live sequence of a generate() call.
struct Sequence {
  size_t request = 0;
  SeqId seq = 0;
  std::vector<int32_t> pending;  // tokens to feed (prompt chunk left, or the last sampled token)
  int64_t length = 0;            // tokens in the KV cache
  std::optional<Sampler> sampler;
  std::optional<Tokenizer::StreamDecoder> decoder;
  std::vector<int32_t> stop_ids;  // tokens that end this sequence
  std::string text;               // decoded so far (complete characters)
  size_t streamed = 0;            // bytes of `text` already given to the callback
  bool done = false;
};

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

// Runs one ragged step: `feeds[i]` are the tokens sequence `steps[i].seq` adds. Returns the
// logits of each sequence's last fed token, [S, vocab].
static absl::StatusOr<HostTensor> run_step(CpuModel& model, PagedKvCache& cache,
                                           const std::vector<StepSequence>& steps,
                                           const std::vector<const std::vector<int32_t>*>& feeds) {
  absl::StatusOr<StepMetadata> meta = build_step_metadata(cache, steps);
  if (!meta.ok()) return meta.status();
  InputBindings in;
  std::vector<int32_t> tokens;
  for (const auto* f : feeds) tokens.insert(tokens.end(), f->begin(), f->end());
  auto ints = [](std::vector<int32_t> v) {
    int64_t n = static_cast<int64_t>(v.size());
    return HostTensor::ints({n}, std::move(v));
  };
  in.tensors["tokens"] = ints(std::move(tokens));
  in.tensors["positions"] = ints(meta->positions);
  in.tensors["slot_mapping"] = ints(meta->slot_mapping);
  in.tensors["qo_indptr"] = ints(meta->qo_indptr);
  in.tensors["kv_page_indptr"] = ints(meta->kv_page_indptr);
  in.tensors["kv_page_indices"] = ints(meta->kv_page_indices);
  in.tensors["kv_last_page_len"] = ints(meta->kv_last_page_len);
  const ModelConfig& c = model.config();
  const std::vector<int64_t> cache_shape = {cache.config().num_pages, cache.config().page_size,
                                            c.num_kv_heads, c.head_dim};
  for (int64_t l = 0; l < c.num_layers; ++l) {
    in.caches[absl::StrCat("k_cache.", l)] =
        KvCacheView{cache.k_data(static_cast<int32_t>(l)), cache_shape};
    in.caches[absl::StrCat("v_cache.", l)] =
        KvCacheView{cache.v_data(static_cast<int32_t>(l)), cache_shape};
  }
  in.symbols.set("K", meta->max_kv_len);
  absl::StatusOr<std::vector<HostTensor>> out = model.executor().run(in);
  if (!out.ok()) return out.status();
  return std::move((*out)[0]);
}

static absl::StatusOr<PagedKvCache> make_cache(const CpuModel& model, int64_t num_pages) {
  KvCacheConfig kc;
  kc.num_layers = static_cast<int32_t>(model.config().num_layers);
  kc.num_kv_heads = static_cast<int32_t>(model.config().num_kv_heads);
  kc.head_dim = static_cast<int32_t>(model.config().head_dim);
  kc.page_size = static_cast<int32_t>(model.limits().page_size);
  kc.num_pages = static_cast<int32_t>(num_pages);
  kc.storage = KvStorage::kHost;
  return PagedKvCache::create(kc);
}

absl::StatusOr<std::vector<GenerationResult>> Generator::generate(
    const std::vector<GenerationRequest>& requests, const TextCallback& on_text,
    GenerationStats* stats) {
  const ModelConfig& c = model_.config();
  const StepLimits& lim = model_.limits();
  const int64_t context =
      lim.max_context > 0 ? std::min(lim.max_context, c.max_context) : c.max_context;
  if (requests.empty()) return std::vector<GenerationResult>();
  if (static_cast<int64_t>(requests.size()) > lim.max_seqs) {
    return absl::InvalidArgumentError(absl::StrCat(requests.size(), " requests exceed the ",
                                                   lim.max_seqs, " sequences a step holds"));
  }
  int64_t pages_wanted = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
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
    int64_t total =
        std::min<int64_t>(context, static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens);
    pages_wanted += (total + lim.page_size - 1) / lim.page_size;
  }
  absl::StatusOr<PagedKvCache> cache = make_cache(
      model_, options_.num_pages > 0 ? options_.num_pages : std::max<int64_t>(pages_wanted, 1));
  if (!cache.ok()) return cache.status();

  std::vector<GenerationResult> results(requests.size());
  std::vector<Sequence> seqs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    Sequence& s = seqs[i];
    s.request = i;
    s.seq = cache->add_sequence();
    s.pending = requests[i].prompt;
    s.decoder.emplace(model_.tokenizer(), /*skip_special=*/false);
    absl::StatusOr<Sampler> sampler = Sampler::create(requests[i].sampling);
    if (!sampler.ok()) return sampler.status();
    s.sampler.emplace(std::move(*sampler));
    if (requests[i].max_new_tokens == 0) s.done = true;
    s.stop_ids = requests[i].stop_ids;
    if (s.stop_ids.empty()) {  // default: the model's EOS ids and the tokenizer's stop tokens
      s.stop_ids = c.eos_ids;
      for (int32_t t : model_.tokenizer().stop_ids()) s.stop_ids.push_back(t);
    }
  }
  GenerationStats local;
  GenerationStats& st = stats ? *stats : local;
  for (const GenerationRequest& r : requests)
    st.prompt_tokens += static_cast<int64_t>(r.prompt.size());

  while (true) {
    // Assemble a step: every live sequence contributes its pending tokens, prompts chunked so the
    // step stays within the token budget (each sequence gets at least one token).
    std::vector<StepSequence> steps;
    std::vector<const std::vector<int32_t>*> feeds;
    std::vector<std::vector<int32_t>> chunks;
    std::vector<size_t> members;
    chunks.reserve(seqs.size());
    int64_t budget = lim.max_tokens;
    bool prefill = false;
    for (Sequence& s : seqs) {
      if (s.done || budget <= 0) continue;
      int64_t take = std::min<int64_t>(static_cast<int64_t>(s.pending.size()), budget);
      chunks.emplace_back(s.pending.begin(), s.pending.begin() + take);
      steps.push_back({s.seq, static_cast<int32_t>(take)});
      members.push_back(s.request);
      budget -= take;
      prefill = prefill || take > 1 || s.length == 0;
    }
    if (steps.empty()) break;
    for (const auto& ch : chunks) feeds.push_back(&ch);
    const double t0 = now_seconds();
    absl::StatusOr<HostTensor> logits = run_step(model_, *cache, steps, feeds);
    if (!logits.ok()) return logits.status();
    (prefill ? st.prefill_seconds : st.decode_seconds) += now_seconds() - t0;
    st.steps++;
    const int64_t vocab = logits->shape[1];
    for (size_t k = 0; k < members.size(); ++k) {
      Sequence& s = seqs[members[k]];
      const GenerationRequest& r = requests[s.request];
      GenerationResult& res = results[s.request];
      s.length += steps[k].num_new_tokens;
      s.pending.erase(s.pending.begin(), s.pending.begin() + steps[k].num_new_tokens);
      if (!s.pending.empty()) continue;  // a prompt chunk: its logits are not a prediction yet
      absl::StatusOr<SampledToken> tok =
          s.sampler->sample(absl::Span<const float>(logits->f.data() + k * vocab, vocab));
      if (!tok.ok()) return tok.status();
      if (std::find(s.stop_ids.begin(), s.stop_ids.end(), tok->token) != s.stop_ids.end()) {
        s.done = true;
        res.finish = FinishReason::kStopToken;
      } else {
        res.tokens.push_back(tok->token);
        st.generated_tokens++;
        s.text += s.decoder->push(tok->token);
        size_t cut = std::string::npos;
        for (const std::string& stop : r.stop_strings) {
          if (stop.empty()) continue;
          size_t at = s.text.find(stop, s.streamed > stop.size() ? s.streamed - stop.size() : 0);
          if (at != std::string::npos) cut = std::min(cut, at);
        }
        if (cut != std::string::npos) {
          s.text.resize(cut);
          s.done = true;
          res.finish = FinishReason::kStopString;
        } else if (static_cast<int64_t>(res.tokens.size()) >= r.max_new_tokens) {
          s.done = true;
          res.finish = FinishReason::kMaxTokens;
        } else if (s.length >= context) {
          s.done = true;  // the sampled token would have no KV slot left in the context
          res.finish = FinishReason::kContextFull;
        } else {
          s.pending.push_back(tok->token);
        }
      }
      if (s.done && res.finish != FinishReason::kStopString) s.text += s.decoder->flush();
      size_t safe = s.done ? s.text.size() : s.text.size() - held_back(s.text, r.stop_strings);
      if (safe > s.streamed) {
        if (on_text) on_text(s.request, s.text.substr(s.streamed, safe - s.streamed));
        s.streamed = safe;
      }
      if (s.done) {
        res.text = s.text;
        if (absl::Status f = cache->free(s.seq); !f.ok()) return f;
      }
    }
  }
  return results;
}

absl::StatusOr<std::vector<std::vector<float>>> Generator::score_incremental(
    const std::vector<int32_t>& ids) {
  if (ids.empty()) return absl::InvalidArgumentError("empty token sequence");
  const int64_t ps = model_.limits().page_size;
  absl::StatusOr<PagedKvCache> cache =
      make_cache(model_, (static_cast<int64_t>(ids.size()) + ps - 1) / ps);
  if (!cache.ok()) return cache.status();
  SeqId seq = cache->add_sequence();
  std::vector<std::vector<float>> rows;
  for (int32_t id : ids) {
    std::vector<int32_t> feed = {id};
    absl::StatusOr<HostTensor> logits = run_step(model_, *cache, {{seq, 1}}, {&feed});
    if (!logits.ok()) return logits.status();
    rows.push_back(std::move(logits->f));
  }
  return rows;
}

absl::StatusOr<std::vector<float>> Generator::prefill_logits(const std::vector<int32_t>& ids) {
  if (ids.empty()) return absl::InvalidArgumentError("empty token sequence");
  const int64_t ps = model_.limits().page_size;
  absl::StatusOr<PagedKvCache> cache =
      make_cache(model_, (static_cast<int64_t>(ids.size()) + ps - 1) / ps);
  if (!cache.ok()) return cache.status();
  SeqId seq = cache->add_sequence();
  absl::StatusOr<HostTensor> logits =
      run_step(model_, *cache, {{seq, static_cast<int32_t>(ids.size())}}, {&ids});
  if (!logits.ok()) return logits.status();
  return std::move(logits->f);
}

}  // namespace kiln
