// run_scheduled_step: a ScheduledStep as a Backend::run_step call (see step_execution.h).
#include "runtime/scheduler/step_execution.h"

#include "absl/strings/str_cat.h"

namespace kiln {

absl::StatusOr<std::vector<int32_t>> run_scheduled_step(Backend& backend, const ScheduledStep& step,
                                                        absl::Span<SamplingStream* const> streams,
                                                        CascadeMode cascade) {
  if (static_cast<int32_t>(streams.size()) != step.num_sequences()) {
    return absl::InternalError(absl::StrCat("the step has ", step.num_sequences(),
                                            " sequences but ", streams.size(),
                                            " sampling streams"));
  }
  if (!step.copies.empty()) {
    if (absl::Status s = backend.copy_kv_pages(step.copies); !s.ok()) return s;
  }
  StepRequest req;
  req.inputs.tokens = step.tokens;
  req.inputs.metadata = step.metadata;
  req.inputs.cascade = step_cascade(step.metadata, backend.plan().kv.page_size, cascade);
  req.sampling.resize(step.num_sequences());  // greedy for chunks whose token is dropped
  for (int32_t s = 0; s < step.num_sequences(); ++s) {
    if (step.samples[s] && streams[s] != nullptr) req.sampling[s] = streams[s]->next();
  }
  absl::StatusOr<StepResult> result = backend.run_step(req);
  if (!result.ok()) return result.status();
  if (static_cast<int32_t>(result->tokens.size()) != step.num_sequences()) {
    return absl::InternalError(absl::StrCat("the backend returned ", result->tokens.size(),
                                            " tokens for a step of ", step.num_sequences(),
                                            " sequences"));
  }
  std::vector<int32_t> tokens = std::move(result->tokens);
  for (int32_t s = 0; s < step.num_sequences(); ++s) {
    if (!step.samples[s]) tokens[s] = -1;
  }
  return tokens;
}

absl::StatusOr<KvPageTables> page_tables_for(const Backend& backend) {
  KvPageTablesConfig c;
  c.page_size = backend.plan().kv.page_size;
  c.num_pages = static_cast<int32_t>(backend.kv_pages());
  return KvPageTables::create(c);
}

}  // namespace kiln
