// Shared helpers of the pass tests: run passes on IR text and read back text and statistics.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/pass_manager.h"

namespace kiln::testing {

struct PassRun {
  std::string text;  // the printed graph after the passes
  PassContext context;
  std::unique_ptr<Graph> graph;
};

/// Parses `ir`, verifies it, runs `passes` with the verifier after each, and prints the result.
inline absl::StatusOr<PassRun> run_passes(std::string_view ir,
                                          const std::vector<std::string>& passes) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(ir);
  if (!g.ok()) return g.status();
  PassManagerOptions options;
  options.verify_each = true;
  absl::StatusOr<PassManager> pm = PassManager::from_names(passes, options);
  if (!pm.ok()) return pm.status();
  PassRun run;
  if (absl::Status s = pm->run(**g, run.context); !s.ok()) return s;
  run.text = print_graph(**g);
  run.graph = std::move(*g);
  return run;
}

/// The IR text as the printer writes it (so inputs can be written loosely).
inline std::string canonical(std::string_view ir) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(ir);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? print_graph(**g) : "";
}

/// The "not fused: ..." reasons a pass counted, joined by newlines.
inline std::string reasons(const PassContext& context, const std::string& pass) {
  std::string out;
  auto it = context.stats.find(pass);
  if (it == context.stats.end()) return out;
  for (const auto& [counter, n] : it->second) {
    if (counter.rfind("not fused: ", 0) == 0) absl::StrAppend(&out, counter.substr(11), "\n");
  }
  return out;
}

inline int64_t stat(const PassContext& context, const std::string& pass,
                    const std::string& counter) {
  auto it = context.stats.find(pass);
  if (it == context.stats.end()) return 0;
  auto c = it->second.find(counter);
  return c == it->second.end() ? 0 : c->second;
}

}  // namespace kiln::testing
