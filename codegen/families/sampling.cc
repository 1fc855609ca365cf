// Family sampling (see sampling.h).
#include "codegen/families/sampling.h"

#include "absl/strings/str_cat.h"
#include "codegen/kernel_source.h"

namespace kiln {

std::string SamplingSpec::key() const {
  return spec_key(KernelFamily::kSampling, DType::kF32, {{"w", warps}});
}

std::vector<EntryDecl> SamplingSpec::entry() const {
  return {{"int*", "out"},         {"const float*", "logits"}, {"const float*", "temperature"},
          {"const int*", "top_k"}, {"const float*", "top_p"},  {"const float*", "uniform"},
          {"int", "vocab"}};
}

absl::StatusOr<KernelTemplate> SamplingSpec::kernel_template() const {
  KernelTemplate t{"sampling.cuh", DType::kF32, "", 32 * warps};
  t.call = absl::StrCat("kiln_k::sample_rows<", 32 * warps, ">");
  return t;
}

absl::Status lower_sampling(const Graph& graph, LoweringContext& ctx) {
  if (graph.outputs().empty()) return ctx.unsupported("the graph has no logits output to sample");
  const Value* logits = graph.outputs()[0].value;  // f32[S, vocab]
  if (logits->type.shape.empty() || logits->type.shape.back().is_symbolic()) {
    return ctx.unsupported("the logits output needs a constant vocab dim");
  }
  auto spec = std::make_shared<SamplingSpec>();
  LaunchRule r;
  r.grid = {"S", "1", "1"};
  r.block = {absl::StrCat(32 * spec->warps), "1", "1"};
  return ctx.launch(std::move(spec), r,
                    {{"out", LaunchArg::runtime_input(RuntimeInput::kSampledIds)},
                     {"logits", ctx.tensor(logits)},
                     {"temperature", LaunchArg::runtime_input(RuntimeInput::kTemperature)},
                     {"top_k", LaunchArg::runtime_input(RuntimeInput::kTopK)},
                     {"top_p", LaunchArg::runtime_input(RuntimeInput::kTopP)},
                     {"uniform", LaunchArg::runtime_input(RuntimeInput::kUniform)},
                     {"vocab", LaunchArg::integer(absl::StrCat(logits->type.shape.back().value))}});
}

}  // namespace kiln
