// `kiln ir`: parse, verify and pretty-print IR text (or the built-in example graph).
#include <fstream>
#include <iostream>
#include <sstream>

#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "tools/commands.h"
#include "tools/example_graph.h"

namespace kiln::tools {
namespace {

struct IrOptions {
  std::string input;
  bool example = false;
};

int run_ir(const IrOptions& opts) {
  std::unique_ptr<Graph> graph;
  if (opts.example) {
    absl::StatusOr<std::unique_ptr<Graph>> g = build_example_graph();
    if (!g.ok()) {
      std::cerr << "kiln ir: example graph: " << g.status().message() << "\n";
      return 1;
    }
    graph = std::move(*g);
  } else if (opts.input.empty()) {
    std::cerr << "kiln ir: give a .kir file (or --example)\n";
    return 2;
  } else {
    std::ifstream in(opts.input, std::ios::binary);
    if (!in) {
      std::cerr << "kiln ir: cannot read " << opts.input << "\n";
      return 1;
    }
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text.str());
    if (!g.ok()) {
      std::cerr << opts.input << ":" << g.status().message() << "\n";
      return 1;
    }
    graph = std::move(*g);
  }
  if (absl::Status s = verify(*graph); !s.ok()) {
    std::cerr << "kiln ir: verification failed: " << s.message() << "\n";
    return 1;
  }
  std::cout << print_graph(*graph);
  return 0;
}

}  // namespace

void add_ir_command(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<IrOptions>();
  CLI::App* cmd = app.add_subcommand("ir", "Parse, verify and print IR (.kir text)");
  cmd->add_option("input", opts->input, "IR text file (.kir)");
  cmd->add_flag("--example", opts->example, "Print the built-in example graph");
  cmd->callback([opts, exit_code] { *exit_code = run_ir(*opts); });
}

}  // namespace kiln::tools
