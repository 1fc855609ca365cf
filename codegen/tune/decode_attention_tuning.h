// The flash_attention decode knobs as a TunableFamily: tiles, warps, pipeline stages, split
// policy (target grid size) and softmax variant (LSE merge or unified max), timed on paged KV
// caches of the node's own head counts, head_dim and page size at three decode steps (batch 1 at
// a long context, batch 16 and 64 at 4k), the sum of the three being the figure of merit.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "codegen/tune/tuner.h"

namespace kiln {

class DecodeAttentionTuning final : public TunableFamily {
 public:
  DecodeAttentionTuning();
  ~DecodeAttentionTuning() override;
  std::string name() const override { return "flash_attention_decode"; }
  bool applies(const Node& node) const override;
  std::string key(const Node& node) const override;
  absl::StatusOr<std::vector<Candidate>> candidates(const Node& node) const override;
  absl::StatusOr<std::vector<std::shared_ptr<const KernelSpec>>> specs(
      const Node& node, const Candidate& c) const override;
  absl::StatusOr<Trial> run(const Node& node, const Candidate& c,
                            TuneDevice& device) const override;
  double tolerance(const Node& node) const override;

  struct Buffers;  // device inputs of one (shape, step) workload, made once and reused

 private:
  mutable std::map<std::string, std::unique_ptr<Buffers>> buffers_;
};

}  // namespace kiln
