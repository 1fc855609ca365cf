// The pass interface: a named graph transformation that says whether it changed the graph, with
// statistics declared as data. Analysis passes (plan-memory, plan-kv) leave their results in the
// PassContext; the PassManager (passes/pass_manager.h) runs pipelines and owns IR printing.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "plan/kv_layout.h"
#include "plan/memory_plan.h"

namespace kiln {

/// What passes share within one pipeline run: options, statistics, analysis results.
struct PassContext {
  /// Per-pass counters, e.g. stats["fuse-attention"]["fused"] = 30.
  std::map<std::string, std::map<std::string, int64_t>> stats;
  std::optional<MemoryPlan> memory_plan;
  std::optional<KvLayout> kv_layout;
  /// The stored dtype of each checkpoint tensor (by name), when the caller knows the model's
  /// weights: fuse-horizontal merges only weights stored alike, so that a derived param is one
  /// run of bytes in one format (a Q4_K_M file keeps some V projections in Q6_K).
  std::map<std::string, DType> weight_dtypes;
  /// Tensor-parallel ranks shard-tensor-parallel splits the graph over (`kiln compile --tp N`);
  /// 1 leaves the graph whole.
  int tensor_parallel = 1;

  void count(const std::string& pass, const std::string& counter, int64_t n = 1) {
    stats[pass][counter] += n;
  }
};

class Pass {
 public:
  virtual ~Pass() = default;
  /// Command-line name, e.g. "fuse-attention".
  virtual std::string name() const = 0;
  /// One line for `kiln ir --list-passes`.
  virtual std::string description() const = 0;
  /// Transforms (or analyses) `graph`; returns whether the graph changed.
  virtual absl::StatusOr<bool> run(Graph& graph, PassContext& context) = 0;
};

}  // namespace kiln
