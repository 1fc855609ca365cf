// The PassManager: runs a pipeline of passes by name, verifies the IR after each pass, collects
// statistics and timings, and owns all IR printing and dumping (DESIGN.md: passes/).
#pragma once

#include <iosfwd>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace kiln {

/// Every debugging switch of a pipeline run, in one place (exposed by `kiln ir`).
struct PassManagerOptions {
#ifdef NDEBUG
  bool verify_each = false;
#else
  bool verify_each = true;  ///< run the verifier after every pass (tests, debug builds)
#endif
  bool print_ir_after_all = false;       ///< print the IR after every pass
  std::set<std::string> print_ir_after;  ///< print the IR after these passes only
  /// When set, write `00-input.kir` and then `NN-<pass>.kir` after pass NN (1-based).
  std::string dump_ir_dir;
  /// Where printed IR goes; nullptr means std::cout.
  std::ostream* print_stream = nullptr;
};

/// What one pass did in one run.
struct PassRecord {
  std::string pass;
  bool changed = false;
  double millis = 0;
  int nodes_before = 0;
  int nodes_after = 0;
};

class PassManager {
 public:
  explicit PassManager(PassManagerOptions options = {}) : options_(std::move(options)) {}

  /// A manager holding the named passes in order; an unknown name is an error that lists the
  /// registered ones.
  static absl::StatusOr<PassManager> from_names(const std::vector<std::string>& names,
                                                PassManagerOptions options = {});

  void add(std::unique_ptr<Pass> pass) { passes_.push_back(std::move(pass)); }
  /// Adds a registered pass by name.
  absl::Status add(const std::string& name);

  /// Runs the passes in order on `graph`. Stops at the first failing pass or verifier error and
  /// names the pass in the error. Statistics land in `context.stats`, timings in records().
  absl::Status run(Graph& graph, PassContext& context);

  const std::vector<PassRecord>& records() const { return records_; }
  const PassManagerOptions& options() const { return options_; }

  /// One line per pass: "fuse-attention: fused 30 (1.2 ms, 1803 -> 1473 nodes)".
  std::string stats_report(const PassContext& context) const;

 private:
  /// `header` (comment lines: the pass's statistics) goes before the IR in a dump file.
  absl::Status emit_ir(const Graph& graph, int index, const std::string& label,
                       const std::string& header = "") const;

  PassManagerOptions options_;
  std::vector<std::unique_ptr<Pass>> passes_;
  std::vector<PassRecord> records_;
};

/// Runs default_pipeline() (passes/pass_registry.h) on `graph`: what `kiln run` and
/// `kiln compile` use. The memory and KV plans are left in `context`.
absl::Status run_default_pipeline(Graph& graph, PassContext& context,
                                  const PassManagerOptions& options = {});

}  // namespace kiln
