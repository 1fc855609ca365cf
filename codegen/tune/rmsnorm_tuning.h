// The rmsnorm / rmsnorm_residual layout knobs as a TunableFamily: threads per row and rows per
// block, timed on the node's hidden size at decode batches (1, 64 rows) and a prefill-sized
// 16384 rows, the sum being the figure of merit.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "codegen/tune/tuner.h"

namespace kiln {

class RmsNormTuning final : public TunableFamily {
 public:
  RmsNormTuning();
  ~RmsNormTuning() override;
  std::string name() const override { return "rmsnorm"; }
  bool applies(const Node& node) const override;
  std::string key(const Node& node) const override;
  absl::StatusOr<std::vector<Candidate>> candidates(const Node& node) const override;
  absl::StatusOr<std::vector<std::shared_ptr<const KernelSpec>>> specs(
      const Node& node, const Candidate& c) const override;
  absl::StatusOr<Trial> run(const Node& node, const Candidate& c,
                            TuneDevice& device) const override;
  double tolerance(const Node& node) const override;

  struct Buffers;

 private:
  mutable std::map<std::string, std::unique_ptr<Buffers>> buffers_;
};

}  // namespace kiln
