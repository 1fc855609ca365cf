// The PassManager (see pass_manager.h).
#include "passes/pass_manager.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/pass_registry.h"

namespace kiln {

absl::StatusOr<PassManager> PassManager::from_names(const std::vector<std::string>& names,
                                                    PassManagerOptions options) {
  PassManager pm(std::move(options));
  for (const std::string& name : names) {
    if (absl::Status s = pm.add(name); !s.ok()) return s;
  }
  return pm;
}

absl::Status PassManager::add(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Pass>> pass = create_pass(name);
  if (!pass.ok()) return pass.status();
  passes_.push_back(std::move(*pass));
  return absl::OkStatus();
}

absl::Status PassManager::emit_ir(const Graph& graph, int index, const std::string& label,
                                  const std::string& header) const {
  const bool print =
      index > 0 && (options_.print_ir_after_all || options_.print_ir_after.count(label) > 0);
  if (!print && options_.dump_ir_dir.empty()) return absl::OkStatus();
  const std::string text = print_graph(graph);
  if (print) {
    std::ostream& out = options_.print_stream ? *options_.print_stream : std::cout;
    out << "// ----- IR after " << label << " -----\n" << text;
  }
  if (!options_.dump_ir_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options_.dump_ir_dir, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot create IR dump folder ", options_.dump_ir_dir, ": ", ec.message()));
    }
    const std::string path = absl::StrFormat("%s/%02d-%s.kir", options_.dump_ir_dir, index, label);
    std::ofstream file(path, std::ios::binary);
    file << header << text;  // the header is comments: the dump still parses (--from-ir)
    if (!file) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

absl::Status PassManager::run(Graph& graph, PassContext& context) {
  records_.clear();
  if (options_.verify_each) {
    if (absl::Status s = verify(graph); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("input IR: ", s.message()));
    }
  }
  if (absl::Status s = emit_ir(graph, 0, "input"); !s.ok()) return s;
  for (size_t i = 0; i < passes_.size(); ++i) {
    Pass& pass = *passes_[i];
    PassRecord record;
    record.pass = pass.name();
    record.nodes_before = graph.num_nodes();
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<bool> changed = pass.run(graph, context);
    record.millis =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!changed.ok()) {
      return absl::Status(changed.status().code(),
                          absl::StrCat(pass.name(), ": ", changed.status().message()));
    }
    record.changed = *changed;
    record.nodes_after = graph.num_nodes();
    records_.push_back(record);
    if (options_.verify_each) {
      if (absl::Status s = verify(graph); !s.ok()) {
        return absl::InternalError(
            absl::StrCat("IR does not verify after ", pass.name(), ": ", s.message()));
      }
    }
    // The dump of a pass starts with what it did: "// fuse-horizontal: matmuls merged 150, ...".
    std::string header = absl::StrFormat("// %s (%.2f ms, %d -> %d nodes%s)", pass.name(),
                                         record.millis, record.nodes_before, record.nodes_after,
                                         record.changed ? "" : ", unchanged");
    if (auto it = context.stats.find(pass.name()); it != context.stats.end()) {
      for (const auto& [counter, n] : it->second) absl::StrAppend(&header, "\n//   ", counter, ": ", n);
    }
    header += "\n";
    if (absl::Status s = emit_ir(graph, static_cast<int>(i) + 1, pass.name(), header); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

std::string PassManager::stats_report(const PassContext& context) const {
  std::string out;
  for (const PassRecord& r : records_) {
    absl::StrAppend(&out, r.pass, ":");
    auto it = context.stats.find(r.pass);
    if (it != context.stats.end()) {
      bool first = true;
      for (const auto& [counter, n] : it->second) {
        absl::StrAppend(&out, first ? " " : ", ", counter, " ", n);
        first = false;
      }
    }
    absl::StrAppend(&out,
                    absl::StrFormat(" (%.2f ms, %d -> %d nodes%s)\n", r.millis, r.nodes_before,
                                    r.nodes_after, r.changed ? "" : ", unchanged"));
  }
  return out;
}

absl::Status run_default_pipeline(Graph& graph, PassContext& context,
                                  const PassManagerOptions& options) {
  absl::StatusOr<PassManager> pm = PassManager::from_names(default_pipeline(), options);
  if (!pm.ok()) return pm.status();
  return pm->run(graph, context);
}

}  // namespace kiln
