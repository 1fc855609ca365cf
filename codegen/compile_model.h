// `kiln compile` as a library call: model -> step graph -> pass pipeline -> lowering -> NVRTC
// (parallel, cached) -> a typed Plan (+ its blobs) -> plan file. tools/cmd_compile.cc only parses
// the command line; the runtime calls build_plan to compile in memory (`kiln run model`).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/families/gemv.h"
#include "codegen/families/persistent_decode.h"
#include "codegen/kernel_cache.h"
#include "codegen/tune/graph_tuner.h"
#include "ir/graph.h"
#include "models/llama_graph.h"
#include "passes/pass.h"
#include "plan/plan.h"
#include "plan/plan_file.h"

namespace kiln {

struct CompileOptions {
  std::string model;            // HF directory or .gguf
  std::string output;           // .kplan path (compile_model only)
  std::string arch = "sm_90a";  // sm_90a, sm_89, sm_80
  StepLimits limits;            // limits.page_size feeds plan-kv; the plan's KvLayout holds it
  std::string from_ir;          // compile this (fused) .kir instead of the model's own graph
  /// Tensor-parallel ranks (`--tp N`): shard-tensor-parallel splits the graph over them and the
  /// plan holds every rank's weight slices. 1 = one GPU.
  int tensor_parallel = 1;
  std::string dump_ir_dir;      // write the IR before and after the pipeline here
  bool pack_weights = false;
  /// Emit and NVRTC-compile the kernels. Off, the plan still lists every kernel (key, family,
  /// entry signature) and launch, but carries no cubin/PTX/source blobs: enough for the CPU
  /// reference backend, and possible on a machine without NVRTC.
  bool build_kernels = true;
  std::string cache_dir;  // kernel cache folder; "" = <default_cache_root()>/kernels
  bool use_cache = true;
  int threads = 0;  // NVRTC threads; 0 = hardware concurrency
  /// Which matmuls get the small-batch GEMV path (codegen/families/gemv.h).
  GemvOptions gemv;
  /// `--tune`: sets the fused nodes' tuning attributes after the passes (so the final IR shows
  /// them); null compiles with the attributes the graph has (defaults when it has none).
  GraphTuner* tuner = nullptr;
  /// `--persistent`: a persistent decode kernel for small-batch decode steps (every matmul there
  /// then takes the GEMV path).
  std::optional<PersistentOptions> persistent;
};

struct CompileReport {
  int kernels = 0;
  int launches = 0;
  int gemms = 0;
  int weights = 0;
  BuildStats build;
  double total_seconds = 0;
  std::string summary;  // one line for the CLI
  std::string tune;     // the tuner's report (empty without --tune)
};

/// A plan built in memory: what a .kplan file holds. Plan fields index `blobs`.
struct CompiledPlan {
  Plan plan;
  std::vector<PlanBlob> blobs;
  CompileReport report;

  /// The bytes of blob `index` (empty when out of range).
  std::string_view blob(int index) const;
};

/// The pass pipeline `kiln compile` runs: the verifier, then passes/'s default pipeline (fusions,
/// plan-memory, plan-kv), dumping numbered IR files into `dump_ir_dir` when it is set.
absl::Status run_compile_pipeline(Graph& graph, PassContext& context,
                                  const std::string& dump_ir_dir = "");

/// Compiles `options.model` into a plan in memory (options.output is ignored).
absl::StatusOr<CompiledPlan> build_plan(const CompileOptions& options);

/// build_plan, then writes the plan file `options.output`.
absl::StatusOr<CompileReport> compile_model(const CompileOptions& options);

}  // namespace kiln
