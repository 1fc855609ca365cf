// `kiln ir`: parse, verify and pretty-print IR text (or the built-in example graph).
#include <fstream>
#include <iostream>
#include <sstream>

#include "ir/parser.h"
#include "models/llama_graph.h"
#include "models/model_source.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "tools/commands.h"
#include "tools/example_graph.h"

namespace kiln::tools {
namespace {

struct IrOptions {
  std::string input;
  bool example = false;
  std::string dtype = "bf16";
  StepLimits limits;
  PlanIrOptions plan;  // for a .kplan input
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A model (HF dir or GGUF): its primitive step graph.
absl::StatusOr<std::unique_ptr<Graph>> graph_from_model(const IrOptions& opts) {
  absl::StatusOr<ModelConfig> config = load_model_config(opts.input);
  if (!config.ok()) return config.status();
  std::optional<DType> dtype = parse_dtype(opts.dtype);
  if (!dtype || !is_float(*dtype)) {
    return absl::InvalidArgumentError("--dtype must be f32, f16 or bf16, got " + opts.dtype);
  }
  StepLimits limits = opts.limits;
  limits.dtype = *dtype;
  auto graph = std::make_unique<Graph>();
  if (absl::Status s = build_llama(*config, limits, *graph); !s.ok()) return s;
  return graph;
}

int run_ir(const IrOptions& opts) {
  if (ends_with(opts.input, ".kplan")) {  // a compiled plan: tools/cmd_plan_ir.cc
    PlanIrOptions plan = opts.plan;
    plan.plan = opts.input;
    return run_plan_ir(plan);
  }
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
  } else if (!ends_with(opts.input, ".kir")) {
    absl::StatusOr<std::unique_ptr<Graph>> g = graph_from_model(opts);
    if (!g.ok()) {
      std::cerr << "kiln ir: " << g.status().message() << "\n";
      return 1;
    }
    graph = std::move(*g);
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
  CLI::App* cmd = app.add_subcommand("ir", "Print the verified IR of a model (HF dir or .gguf) or of IR text (.kir)");
  cmd->add_option("input", opts->input, "model directory, .gguf file, or .kir IR text");
  cmd->add_option("--dtype", opts->dtype, "compute dtype of a model's graph (f32, f16, bf16)")
      ->capture_default_str();
  cmd->add_option("--max-tokens", opts->limits.max_tokens, "tokens per step (symbol T bound)")
      ->capture_default_str();
  cmd->add_option("--max-seqs", opts->limits.max_seqs, "sequences per step (symbol S bound)")
      ->capture_default_str();
  cmd->add_option("--page-size", opts->limits.page_size, "KV cache page size in tokens")
      ->capture_default_str();
  cmd->add_flag("--example", opts->example, "Print the built-in example graph");
  cmd->add_flag("--kernels", opts->plan.kernels, "(.kplan) list the plan's kernels");
  cmd->add_option("--source", opts->plan.source, "(.kplan) print one kernel's CUDA source");
  cmd->add_option("--ptx", opts->plan.ptx, "(.kplan) print one kernel's PTX");
  cmd->callback([opts, exit_code] { *exit_code = run_ir(*opts); });
}

}  // namespace kiln::tools
