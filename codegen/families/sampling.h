// Family sampling (kernels/sampling.cuh): one token per sequence from the logits f32[S, vocab] —
// greedy, temperature, top-k, top-p — with the engine's uniform draw, so the CPU and GPU pick
// the same token from the same logits. The runtime launches it after the graph (node -1).
#pragma once

#include "codegen/families/family.h"

namespace kiln {

struct SamplingSpec final : KernelSpec {
  int64_t warps = 32;  // one block of 32 warps per sequence

  KernelFamily family() const override { return KernelFamily::kSampling; }
  std::string key() const override;  // sampling_f32_w<warps>
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
};

/// The sampling launch over the graph's first output (the logits).
absl::Status lower_sampling(const Graph& graph, LoweringContext& ctx);

}  // namespace kiln
