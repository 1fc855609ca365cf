// Test helper: the plan `kiln run <model>` builds in memory (no kernels), and a reference backend
// + engine over it, for the engine and backend tests.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "codegen/compile_model.h"
#include "ir/printer.h"
#include "models/tokenizer_source.h"
#include "plan/plan.h"
#include "runtime/engine/engine.h"
#include "runtime/reference/reference_backend.h"

namespace kiln::testing {

// codegen's GPU lowering has no f32 attention kernels, so an f32 plan (the reference backend's
// exact mode) is built at bf16 and then given the f32 step graph and its KV layout: the reference
// backend reads only the IR, the weights and the KV layout. TODO(runtime): drop once
// build_plan(build_kernels = false) accepts graphs that have no GPU lowering.
inline absl::StatusOr<CompiledPlan> build_cpu_plan(CompileOptions o) {
  o.build_kernels = false;
  if (o.limits.dtype != DType::kF32) return build_plan(o);
  const StepLimits limits = o.limits;
  o.limits.dtype = DType::kBF16;
  absl::StatusOr<CompiledPlan> built = build_plan(o);
  if (!built.ok()) return built.status();
  Graph g;
  if (absl::Status s = build_llama(built->plan.model, limits, g); !s.ok()) return s;
  PassContext ctx;
  if (absl::Status s = run_compile_pipeline(g, ctx); !s.ok()) return s;
  Plan& p = built->plan;
  p.ir = print_graph(g);
  p.limits.dtype = limits.dtype;
  p.kv = *ctx.kv_layout;
  p.memory = ctx.memory_plan;
  p.kernels.clear();
  p.launches.clear();
  p.gemms.clear();
  p.workspaces.clear();
  p.aliases.clear();
  p.constants.clear();
  return built;
}

/// The model at `path` (HF dir or .gguf) compiled in memory as `kiln run` does (no kernels).
inline absl::StatusOr<Plan> plan_for_model(const std::string& path, const StepLimits& limits) {
  CompileOptions o;
  o.model = path;
  o.limits = limits;
  absl::StatusOr<CompiledPlan> built = build_cpu_plan(o);
  if (!built.ok()) return built.status();
  return std::move(built->plan);
}

/// A model loaded as `kiln run` loads it: plan, reference backend, tokenizer.
struct LoadedModel {
  Plan plan;
  std::unique_ptr<ReferenceBackend> backend;
  std::unique_ptr<Tokenizer> tokenizer;
};

inline absl::StatusOr<LoadedModel> load_model(const std::string& path, const StepLimits& limits,
                                              const BackendOptions& options = {}) {
  absl::StatusOr<Plan> plan = plan_for_model(path, limits);
  if (!plan.ok()) return plan.status();
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> backend =
      ReferenceBackend::create(*plan, options);
  if (!backend.ok()) return backend.status();
  absl::StatusOr<Tokenizer> tokenizer = load_tokenizer(plan->tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  return LoadedModel{std::move(*plan), std::move(*backend),
                     std::make_unique<Tokenizer>(std::move(*tokenizer))};
}

}  // namespace kiln::testing
