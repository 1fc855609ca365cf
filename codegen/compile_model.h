// `kiln compile` as a library call: model -> step graph -> pass pipeline -> lowering -> NVRTC
// (parallel, cached) -> plan file. tools/cmd_compile.cc only parses the command line.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "codegen/kernel_cache.h"
#include "ir/graph.h"
#include "models/llama_graph.h"
#include "passes/pass.h"

namespace kiln {

struct CompileOptions {
  std::string model;            // HF directory or .gguf
  std::string output;           // .kplan path
  std::string arch = "sm_90a";  // sm_90a, sm_89, sm_80
  StepLimits limits;
  std::string from_ir;      // compile this (fused) .kir instead of the model's own graph
  std::string dump_ir_dir;  // write the IR before and after the pipeline here
  bool pack_weights = false;
  std::string cache_dir;  // kernel cache folder; "" = <default_cache_root()>/kernels
  bool use_cache = true;
  int threads = 0;  // NVRTC threads; 0 = hardware concurrency
};

struct CompileReport {
  int kernels = 0;
  int launches = 0;
  int gemms = 0;
  int weights = 0;
  BuildStats build;
  double total_seconds = 0;
  std::string summary;  // one line for the CLI
};

/// The pass pipeline `kiln compile` runs: the verifier, then passes/'s default pipeline (fusions,
/// plan-memory, plan-kv), dumping numbered IR files into `dump_ir_dir` when it is set.
absl::Status run_compile_pipeline(Graph& graph, PassContext& context,
                                  const std::string& dump_ir_dir = "");

/// Compiles `options.model` into the plan file `options.output`.
absl::StatusOr<CompileReport> compile_model(const CompileOptions& options);

}  // namespace kiln
