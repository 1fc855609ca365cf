// CpuStepRunner: binds a scheduled step to the reference executor's graph inputs and samples.
#include "runtime/scheduler/cpu_step_runner.h"

#include "absl/strings/str_cat.h"

namespace kiln {

absl::StatusOr<PagedKvCache> make_cpu_kv_cache(const CpuModel& model, int64_t num_pages) {
  KvCacheConfig kc;
  kc.num_layers = static_cast<int32_t>(model.config().num_layers);
  kc.num_kv_heads = static_cast<int32_t>(model.config().num_kv_heads);
  kc.head_dim = static_cast<int32_t>(model.config().head_dim);
  kc.page_size = static_cast<int32_t>(model.limits().page_size);
  kc.num_pages = static_cast<int32_t>(num_pages);
  kc.storage = KvStorage::kHost;
  return PagedKvCache::create(kc);
}

absl::StatusOr<std::vector<int32_t>> CpuStepRunner::run(const ScheduledStep& step,
                                                        absl::Span<Sampler* const> samplers) {
  if (!step.copies.empty()) {
    return absl::InternalError("host KV storage copies pages itself; the step carries copies");
  }
  const StepMetadata& m = step.metadata;
  auto ints = [](const std::vector<int32_t>& v) {
    return HostTensor::ints({static_cast<int64_t>(v.size())}, v);
  };
  InputBindings in;
  in.tensors["tokens"] = ints(step.tokens);
  in.tensors["positions"] = ints(m.positions);
  in.tensors["slot_mapping"] = ints(m.slot_mapping);
  in.tensors["qo_indptr"] = ints(m.qo_indptr);
  in.tensors["kv_page_indptr"] = ints(m.kv_page_indptr);
  in.tensors["kv_page_indices"] = ints(m.kv_page_indices);
  in.tensors["kv_last_page_len"] = ints(m.kv_last_page_len);
  const ModelConfig& c = model_.config();
  const std::vector<int64_t> shape = {kv_.config().num_pages, kv_.config().page_size,
                                      c.num_kv_heads, c.head_dim};
  for (int32_t l = 0; l < static_cast<int32_t>(c.num_layers); ++l) {
    in.caches[absl::StrCat("k_cache.", l)] = KvCacheView{kv_.k_data(l), shape};
    in.caches[absl::StrCat("v_cache.", l)] = KvCacheView{kv_.v_data(l), shape};
  }
  in.symbols.set("K", m.max_kv_len);
  absl::StatusOr<std::vector<HostTensor>> out = model_.executor().run(in);
  if (!out.ok()) return out.status();
  const HostTensor& logits = (*out)[0];  // [S, vocab]
  const int64_t vocab = logits.shape[1];
  std::vector<int32_t> tokens(step.num_sequences(), -1);
  for (int32_t s = 0; s < step.num_sequences(); ++s) {
    if (!step.samples[s] || samplers[s] == nullptr) continue;
    absl::StatusOr<SampledToken> t =
        samplers[s]->sample(absl::Span<const float>(logits.f.data() + s * vocab, vocab));
    if (!t.ok()) return t.status();
    tokens[s] = t->token;
  }
  return tokens;
}

}  // namespace kiln
