// The pass interface: a named graph transformation that says whether it changed the graph, with
// statistics declared as data. Analysis passes (plan-memory, plan-kv) leave their results in the
// PassContext; the PassManager (passes/pass_manager.h) runs pipelines and owns IR printing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "ir/graph.h"

namespace kiln {

/// Arena placement of every intermediate value (plan-memory's result). Sized for the symbols'
/// upper bounds; offsets are in bytes from the arena's base.
struct MemoryPlan {
  struct Buffer {
    std::string value;   // the value's printed name ("%42")
    int64_t offset = 0;  // bytes
    int64_t size = 0;    // bytes at the symbols' upper bounds
    int first_use = 0;   // node index that defines it
    int last_use = 0;    // last node index that reads it (or the graph's end for outputs)
    /// For a view that shares its source's bytes (reshape): the source buffer's value name;
    /// offset, size and live range are then the source's. Empty for buffers of their own.
    std::string alias_of;
  };
  std::vector<Buffer> buffers;
  int64_t arena_bytes = 0;
  int64_t lower_bound_bytes = 0;  // max over program points of the bytes live at that point
  int64_t alignment = 256;
};

/// KV cache layout (plan-kv's result). Pages are counted at load time from a memory budget.
struct KvPlan {
  int64_t page_size = 16;      // tokens per page
  std::string layout = "NHD";  // per page: [page_size, kv_heads, head_dim]
  DType dtype = DType::kBF16;
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t bytes_per_page = 0;   // one page of K plus one of V, for one layer
  int64_t bytes_per_token = 0;  // over all layers, K and V
};

/// What passes share within one pipeline run: options, statistics, analysis results.
struct PassContext {
  /// Per-pass counters, e.g. stats["fuse-attention"]["fused"] = 30.
  std::map<std::string, std::map<std::string, int64_t>> stats;
  std::optional<MemoryPlan> memory_plan;
  std::optional<KvPlan> kv_plan;

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
