// run_scheduled_step: hands one ScheduledStep to a Backend — its copy-on-write page copies, then
// the ragged step with each sampled sequence's settings and uniform draw.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/backend.h"
#include "runtime/engine/sampling.h"
#include "runtime/scheduler/scheduler.h"

namespace kiln {

/// Runs `step` on `backend` and returns [S] tokens: for sequence s with step.samples[s], the
/// token the backend picked with `streams[s]->next()` (greedy when streams[s] is null); -1 for the
/// others (a prefill chunk short of the end of its prompt, whose logits nobody needs). Those draw
/// nothing from their stream, so a stream's position stays the number of tokens its request
/// sampled: a preempted request that recomputes gets the same draws it would have had.
/// With `cascade` kAuto a decode step whose sequences share prefix pages (the prefix cache gives
/// requests on one prompt the same pages) carries its cascade layout (StepInputs::cascade).
absl::StatusOr<std::vector<int32_t>> run_scheduled_step(Backend& backend, const ScheduledStep& step,
                                                        absl::Span<SamplingStream* const> streams,
                                                        CascadeMode cascade = CascadeMode::kAuto);

/// Page tables sized to the backend's KV storage, with the plan's page size.
absl::StatusOr<KvPageTables> page_tables_for(const Backend& backend);

}  // namespace kiln
