// StepRunner: what the engine loop needs of a backend — run one scheduled ragged step and sample
// one token for each sequence whose chunk ends what it has.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/sampler.h"
#include "runtime/scheduler/scheduler.h"

namespace kiln {

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  /// Runs `step` (after its page copies) and returns [S] tokens: for sequence s with
  /// step.samples[s], the token samplers[s] picks from its logits; -1 for the others (a prefill
  /// chunk short of the end of its prompt, whose logits nobody needs). A failed step must leave
  /// the K/V of sequences outside it intact.
  virtual absl::StatusOr<std::vector<int32_t>> run(const ScheduledStep& step,
                                                   absl::Span<Sampler* const> samplers) = 0;
};

}  // namespace kiln
